//! Test support for the host calls of shared data, queues, metrics, properties and lifecycle:
//! modules that import several host functions and export each under its own name.

use crate::plugin::PluginConfig;
use crate::runtime::Runtime;
use crate::testing::{PRELUDE, config, plugin_from_wat};
use crate::vm::Vm;

/// A module importing each `env.name` with `params` and an i32 result, exporting it as `name`
/// without its `proxy_` prefix; `extra` adds more items (callbacks).
pub(crate) fn guest_wat(imports: &[(&str, &str)], extra: &str) -> String {
    let mut items = String::new();
    for (name, params) in imports {
        let short = name.strip_prefix("proxy_").unwrap_or(name);
        // The export takes only i32s (what `Vm::test_call` passes): an i64 parameter is the
        // sign extension of its i32.
        let gets: String = params
            .split_whitespace()
            .enumerate()
            .map(|(i, ty)| match ty {
                "i64" => format!("local.get {i} i64.extend_i32_s "),
                _ => format!("local.get {i} "),
            })
            .collect();
        let outer = params.replace("i64", "i32");
        items.push_str(&format!(
            "(import \"env\" \"{name}\" (func ${short} (param {params}) (result i32)))\n"
        ));
        items.push_str(&format!(
            "(func (export \"{short}\") (param {outer}) (result i32) {gets} call ${short})\n"
        ));
    }
    // Imports must come before other items: move them first.
    let (imports, funcs): (Vec<&str>, Vec<&str>) =
        items.lines().partition(|l| l.starts_with("(import"));
    format!(
        "(module\n{}\n{PRELUDE}\n(func (export \"proxy_abi_version_0_2_1\"))\n{}\n{extra}\n)",
        imports.join("\n"),
        funcs.join("\n")
    )
}

/// A started VM of [`guest_wat`] with the given names and ids.
pub(crate) fn guest_vm(rt: &Runtime, imports: &[(&str, &str)], name: &str, vm_id: &str) -> Vm {
    Vm::start(&plugin_from_wat(
        rt,
        &guest_wat(imports, ""),
        named(name, vm_id),
    ))
    .expect("vm starts")
}

/// The test configuration with this filter name and `vm_id`.
pub(crate) fn named(name: &str, vm_id: &str) -> PluginConfig {
    PluginConfig {
        vm_id: vm_id.into(),
        ..config(name)
    }
}
