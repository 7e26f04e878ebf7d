//! A plugin: one configured filter, i.e. a compiled module plus its name, ids and configuration.

use std::sync::Arc;

use bytes::Bytes;

use crate::callout::CalloutHandler;
use crate::guest_log::LogSink;
use crate::limits::Limits;
use crate::module::CompiledModule;

/// How a filter is configured: what Envoy calls the plugin config.
#[derive(Clone, Default)]
pub struct PluginConfig {
    /// Unique in the chain; the `plugin_name` property.
    pub name: String,
    /// The `plugin_root_id` property; SDKs use it to pick a root context.
    pub root_id: String,
    /// The `plugin_vm_id` property; also the namespace of shared data and queues.
    pub vm_id: String,
    /// The plugin configuration buffer, read in `proxy_on_configure`.
    pub configuration: Bytes,
    /// The VM configuration buffer, read in `proxy_on_vm_start`.
    pub vm_configuration: Bytes,
    pub limits: Limits,
    /// Skip the filter when its VM fails, instead of failing the request with 503.
    pub fail_open: bool,
    /// Performs the filter's `proxy_http_call`s; without one, every call is BadArgument.
    pub callouts: Option<Arc<dyn CalloutHandler>>,
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginConfig")
            .field("name", &self.name)
            .field("root_id", &self.root_id)
            .field("vm_id", &self.vm_id)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

/// What a VM's host state knows of its plugin.
pub struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub configuration: Bytes,
    pub vm_configuration: Bytes,
    pub limits: Limits,
    pub fail_open: bool,
    pub(crate) log: Arc<dyn LogSink>,
    pub(crate) callouts: Option<Arc<dyn CalloutHandler>>,
}

impl std::fmt::Debug for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInfo")
            .field("name", &self.name)
            .field("root_id", &self.root_id)
            .field("vm_id", &self.vm_id)
            .finish_non_exhaustive()
    }
}

/// A module with its configuration, ready to start VMs from.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub(crate) module: Arc<CompiledModule>,
    pub(crate) info: Arc<PluginInfo>,
}

impl Plugin {
    /// Pairs a compiled module with its configuration. Nothing runs until a VM is started.
    pub fn new(module: Arc<CompiledModule>, config: PluginConfig) -> Plugin {
        let log = module.runtime_log();
        let info = PluginInfo {
            name: config.name,
            root_id: config.root_id,
            vm_id: config.vm_id,
            configuration: config.configuration,
            vm_configuration: config.vm_configuration,
            limits: config.limits,
            fail_open: config.fail_open,
            log,
            callouts: config.callouts,
        };
        Plugin {
            module,
            info: Arc::new(info),
        }
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn module(&self) -> &Arc<CompiledModule> {
        &self.module
    }
}

#[cfg(test)]
impl PluginInfo {
    pub(crate) fn clone_for_test(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            root_id: self.root_id.clone(),
            vm_id: self.vm_id.clone(),
            configuration: self.configuration.clone(),
            vm_configuration: self.vm_configuration.clone(),
            limits: self.limits.clone(),
            fail_open: self.fail_open,
            log: self.log.clone(),
            callouts: self.callouts.clone(),
        }
    }
}
