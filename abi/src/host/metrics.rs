//! Metrics: proxy-wasm ABI v0.2.1 §Metrics.
//!
//! Metrics belong to the filter (all its VMs share them) and are exported through the `metrics`
//! crate as `wasmgate_filter_<sanitized name>{filter="<filter name>"}`; see
//! [`crate::shared`]. The statuses follow Envoy's `defineMetric`, `incrementMetric`,
//! `recordMetric` and `getMetric`.

use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{slice, split, write_u32, write_u64};
use crate::shared::{MetricKind, MetricSpace};
use crate::state::HostState;
use crate::types::Status;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_define_metric", define_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", increment_metric)?;
    linker.func_wrap("env", "proxy_record_metric", record_metric)?;
    linker.func_wrap("env", "proxy_get_metric", get_metric)?;
    Ok(())
}

fn space(state: &mut HostState) -> std::sync::Arc<MetricSpace> {
    state.shared.metrics(state.runtime.shared(), &state.plugin)
}

/// Defines a counter (0), gauge (1) or histogram (2) and writes its id, whose low 2 bits are
/// the type. Defining a name again gives the same id.
///
/// ABI: `proxy_define_metric`. BadArgument for an unknown type, a name over the length cap or a
/// name already defined with another type; InternalFailure past the filter's metric cap (the
/// Rust SDK panics on it); InvalidMemoryAccess for a bad range or out-pointer.
fn define_metric(
    mut caller: Caller<'_, HostState>,
    metric_type: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_define_metric")?;
    let Some(kind) = MetricKind::from_u32(metric_type) else {
        return Ok(Status::BadArgument.code());
    };
    let (mem, state) = split(&mut caller);
    let result = slice(mem, ret_id, 4).and_then(|_| {
        let name = slice(mem, name_ptr, name_size)?;
        space(state).define(kind, name)
    });
    Ok(code(result.and_then(|id| write_u32(mem, ret_id, id))))
}

/// Adds `delta` to a counter (which only grows) or a gauge (down when negative).
///
/// ABI: `proxy_increment_metric`. BadArgument for a histogram, an id of no type, or a counter
/// delta ≤ 0; NotFound for an unknown counter or gauge.
fn increment_metric(
    mut caller: Caller<'_, HostState>,
    metric_id: u32,
    delta: i64,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_increment_metric")?;
    Ok(code(space(caller.data_mut()).increment(metric_id, delta)))
}

/// Records `value` (the ABI's u64): a counter adds it, a gauge is set to it, a histogram
/// records it (Envoy's `recordMetric`).
///
/// ABI: `proxy_record_metric`. NotFound for an unknown id.
fn record_metric(
    mut caller: Caller<'_, HostState>,
    metric_id: u32,
    value: i64,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_record_metric")?;
    Ok(code(
        space(caller.data_mut()).record(metric_id, value as u64),
    ))
}

/// Writes a counter's or a gauge's value.
///
/// ABI: `proxy_get_metric`. BadArgument for a histogram or an id of no type; NotFound for an
/// unknown counter or gauge; InvalidMemoryAccess for a bad out-pointer.
fn get_metric(
    mut caller: Caller<'_, HostState>,
    metric_id: u32,
    ret_value: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_metric")?;
    let (mem, state) = split(&mut caller);
    let result = space(state).value(metric_id);
    Ok(code(result.and_then(|v| write_u64(mem, ret_value, v))))
}

#[cfg(test)]
mod tests;
