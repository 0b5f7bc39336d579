//! The resource budget of one component, checked before it is compiled.
//!
//! Every live instance takes slots from pools shared by all tenants (core instances, linear
//! memories, tables). A component that instantiates many core modules, each with its own
//! memory or table, would take many slots per request, and a few sleeping requests could
//! exhaust a pool for everyone. So a component must fit [`BUDGET`], which every
//! `wasm32-wasip2` Rust plugin fits with room to spare, and the pooling allocator gives each
//! component exactly this much (`Runtime::new`), with totals sized so that the number of
//! concurrent component instances, not what each one holds, is what runs out first.
//!
//! Counted by reading the binary (wasmparser), not by compiling it: a module instantiated
//! twice counts twice, a nested component counts once per instantiation, and memories and
//! tables count where they are defined (an imported memory is another module's, already
//! counted). Modules that cannot be seen statically (imported, or aliased from an instance
//! export) count as an instance with nothing in it; they cannot link here anyway, and the
//! pooling allocator's own per-component limits are the backstop.

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, ComponentTypeRef, Encoding, Instance, Parser, Payload,
};

/// What one instantiation of a component allocates from the shared pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Core module instantiations.
    pub core_instances: u32,
    /// Linear memories defined by the instantiated modules.
    pub memories: u32,
    /// Tables defined by the instantiated modules.
    pub tables: u32,
    /// The most memories one core module defines.
    pub module_memories: u32,
    /// The most tables one core module defines.
    pub module_tables: u32,
}

/// Measured (`Usage::of`) on the plugins in `plugins/`, built for `wasm32-wasip2`: echo,
/// crm-track, contract-probe, hostile and hostile-sockets all use 3 core instances (the
/// program, and wit-component's shim and fix-up modules), 1 memory and 2 tables (the
/// program's and the shim's), each module at most 1 memory and 1 table. A component built
/// through the `wasi_snapshot_preview1` adapter adds one core instance.
pub const BUDGET: Usage = Usage { core_instances: 8, memories: 2, tables: 4, module_memories: 1, module_tables: 1 };

impl Usage {
    /// Measures a component's bytes. `Ok(None)` for a core module (not a component: the
    /// compiler refuses it with a better message); `Err` for bytes that do not parse.
    pub fn of(bytes: &[u8]) -> Result<Option<Usage>, String> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut widest = Usage::default();
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| e.to_string())?;
            match payload {
                Payload::Version { encoding: Encoding::Module, .. } if frames.is_empty() => return Ok(None),
                Payload::Version { encoding: Encoding::Component, .. } if frames.is_empty() => frames.push(Frame::component()),
                Payload::ModuleSection { .. } => frames.push(Frame::Module { memories: 0, tables: 0 }),
                Payload::ComponentSection { .. } => frames.push(Frame::component()),
                Payload::MemorySection(s) => {
                    if let Some(Frame::Module { memories, .. }) = frames.last_mut() {
                        *memories += s.count();
                    }
                }
                Payload::TableSection(s) => {
                    if let Some(Frame::Module { tables, .. }) = frames.last_mut() {
                        *tables += s.count();
                    }
                }
                Payload::InstanceSection(s) => {
                    let Some(Frame::Component(c)) = frames.last_mut() else { continue };
                    for instance in s {
                        if let Instance::Instantiate { module_index, .. } = instance.map_err(|e| e.to_string())? {
                            let cost = c.modules.get(module_index as usize).copied().flatten().unwrap_or(OPAQUE);
                            c.usage.add(cost);
                        }
                    }
                }
                Payload::ComponentInstanceSection(s) => {
                    let Some(Frame::Component(c)) = frames.last_mut() else { continue };
                    for instance in s {
                        if let wasmparser::ComponentInstance::Instantiate { component_index, .. } = instance.map_err(|e| e.to_string())? {
                            let cost = c.components.get(component_index as usize).copied().flatten().unwrap_or(OPAQUE);
                            c.usage.add(cost);
                        }
                    }
                }
                Payload::ComponentImportSection(s) => {
                    let Some(Frame::Component(c)) = frames.last_mut() else { continue };
                    for import in s {
                        match import.map_err(|e| e.to_string())?.ty {
                            ComponentTypeRef::Module(_) => c.modules.push(None),
                            ComponentTypeRef::Component(_) => c.components.push(None),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentAliasSection(s) => {
                    for alias in s {
                        let alias = alias.map_err(|e| e.to_string())?;
                        let outer = |count: u32, index: u32, modules: bool| {
                            let n = frames.len().checked_sub(1 + count as usize)?;
                            let Frame::Component(c) = &frames[n] else { return None };
                            let list = if modules { &c.modules } else { &c.components };
                            list.get(index as usize).copied().flatten()
                        };
                        let (module, component) = match alias {
                            ComponentAlias::Outer { kind: ComponentOuterAliasKind::CoreModule, count, index } => {
                                (Some(outer(count, index, true)), None)
                            }
                            ComponentAlias::Outer { kind: ComponentOuterAliasKind::Component, count, index } => {
                                (None, Some(outer(count, index, false)))
                            }
                            ComponentAlias::InstanceExport { kind: ComponentExternalKind::Module, .. } => (Some(None), None),
                            ComponentAlias::InstanceExport { kind: ComponentExternalKind::Component, .. } => (None, Some(None)),
                            _ => (None, None),
                        };
                        let Some(Frame::Component(c)) = frames.last_mut() else { continue };
                        if let Some(m) = module {
                            c.modules.push(m);
                        }
                        if let Some(k) = component {
                            c.components.push(k);
                        }
                    }
                }
                Payload::End(_) => match frames.pop() {
                    Some(Frame::Module { memories, tables }) => {
                        widest.module_memories = widest.module_memories.max(memories);
                        widest.module_tables = widest.module_tables.max(tables);
                        let cost = Usage { core_instances: 1, memories, tables, ..Usage::default() };
                        if let Some(Frame::Component(c)) = frames.last_mut() {
                            c.modules.push(Some(cost));
                        }
                    }
                    Some(Frame::Component(done)) => match frames.last_mut() {
                        Some(Frame::Component(c)) => c.components.push(Some(done.usage)),
                        _ => {
                            return Ok(Some(Usage {
                                module_memories: widest.module_memories,
                                module_tables: widest.module_tables,
                                ..done.usage
                            }))
                        }
                    },
                    None => return Err("unbalanced sections".into()),
                },
                _ => {}
            }
        }
        Err("truncated component".into())
    }

    fn add(&mut self, other: Usage) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }

    /// What goes past `budget`, for the refusal (`None` when everything fits).
    pub fn exceeds(&self, budget: &Usage) -> Option<String> {
        let checks = [
            (self.core_instances, budget.core_instances, "core module instances"),
            (self.memories, budget.memories, "linear memories"),
            (self.tables, budget.tables, "tables"),
            (self.module_memories, budget.module_memories, "linear memories in one core module"),
            (self.module_tables, budget.module_tables, "tables in one core module"),
        ];
        let over: Vec<String> =
            checks.iter().filter(|(n, max, _)| n > max).map(|(n, max, what)| format!("{n} {what} (at most {max})")).collect();
        (!over.is_empty()).then(|| format!("over the resource budget: {}", over.join(", ")))
    }
}

/// An instantiation whose module or component cannot be seen statically.
const OPAQUE: Usage = Usage { core_instances: 1, memories: 0, tables: 0, module_memories: 0, module_tables: 0 };

enum Frame {
    Module { memories: u32, tables: u32 },
    Component(ComponentFrame),
}

/// A component being read: its core module and component index spaces (with the cost of one
/// instantiation of each, `None` when unknown) and what its own instantiations add up to.
#[derive(Default)]
struct ComponentFrame {
    modules: Vec<Option<Usage>>,
    components: Vec<Option<Usage>>,
    usage: Usage,
}

impl Frame {
    fn component() -> Frame {
        Frame::Component(ComponentFrame::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_instantiations_memories_and_tables() {
        let c = wat::parse_str(
            r#"(component
                (core module $m (memory 1) (table 1 funcref))
                (core module $empty)
                (core instance (instantiate $m))
                (core instance (instantiate $m))
                (core instance (instantiate $empty))
                (component $inner
                    (core module $n (memory 1))
                    (core instance (instantiate $n)))
                (instance (instantiate $inner))
                (instance (instantiate $inner))
                (instance (instantiate $inner)))"#,
        )
        .unwrap();
        let u = Usage::of(&c).unwrap().unwrap();
        assert_eq!(u, Usage { core_instances: 6, memories: 5, tables: 2, module_memories: 1, module_tables: 1 });
        let over = u.exceeds(&BUDGET).unwrap();
        assert!(over.contains("5 linear memories (at most 2)") && !over.contains("tables"), "{over}");
    }

    #[test]
    fn outer_aliases_carry_the_modules_cost() {
        let c = wat::parse_str(
            r#"(component
                (core module $m (table 1 funcref) (table 1 funcref))
                (component $inner
                    (alias outer 1 $m (core module $am))
                    (core instance (instantiate $am)))
                (instance (instantiate $inner)))"#,
        )
        .unwrap();
        let u = Usage::of(&c).unwrap().unwrap();
        assert_eq!((u.core_instances, u.tables, u.module_tables), (1, 2, 2));
        assert!(u.exceeds(&BUDGET).unwrap().contains("2 tables in one core module (at most 1)"));
    }

    #[test]
    fn modules_are_not_measured_and_garbage_is_an_error() {
        assert_eq!(Usage::of(&wat::parse_str("(module (memory 1))").unwrap()).unwrap(), None);
        assert!(Usage::of(b"not wasm").is_err());
        assert_eq!(Usage::of(b"\0asm\x0d\0\x01\0").unwrap(), Some(Usage::default()));
    }
}
