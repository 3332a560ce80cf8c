//! A plugin version as the runtime calls it: compiled once and pre-instantiated once, with
//! its limits, grants and instance slots. Every call instantiates it afresh in its own
//! `Store` (or takes a warm instance, see [`super::warm`]).

use super::deadline::Conduct;
use super::state::PluginState;
use super::warm::WarmPool;
use crate::config::{HttpGrant, Limits};
use crate::contract::PluginIdent;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use wasmtime::Store;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Func, Instance, InstancePre, Lift, Lower, TypedFunc,
};

pub struct Prepared {
    pub ident: Arc<PluginIdent>,
    pub pre: InstancePre<PluginState>,
    /// Present when the component exports the `followup` interface (book-job routes).
    pub book: Option<Export>,
    /// Present when the component exports the `appointments` interface (search routes).
    pub search: Option<Export>,
    /// Present when the component exports the `authentication` interface (logon routes).
    pub login: Option<Export>,
    pub limits: Limits,
    pub config: Arc<HashMap<String, String>>,
    /// Whether the plugin may use the key-value store.
    pub kv: bool,
    /// The origins the plugin may call over HTTP, and the limits of those calls.
    pub http: Option<Arc<HttpGrant>>,
    /// Bounds the calls of this plugin in flight (`max_concurrency`).
    pub slots: tokio::sync::Semaphore,
    /// Requests one instance may serve (`reuse_instances`; 1: a fresh instance each).
    pub reuse_instances: u32,
    /// Idle instances kept for reuse, per route; empty unless `reuse_instances` > 1.
    pub warm: WarmPool,
    /// Whether this version's calls have been running away lately.
    pub conduct: Arc<Conduct>,
    /// How its bookings are recorded, when they are.
    pub record: Option<Arc<crate::config::RecordPolicy>>,
}

impl Prepared {
    /// Whether this version exports what a route of `kind` calls.
    pub fn serves(&self, kind: crate::contract::RouteKind) -> bool {
        use crate::contract::RouteKind;
        match kind {
            RouteKind::BookJob => self.book.is_some(),
            RouteKind::AppointmentSearch => self.search.is_some(),
            RouteKind::Authentication => self.login.is_some(),
        }
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("ident", &self.ident)
            .field("book", &self.book.is_some())
            .field("search", &self.search.is_some())
            .field("login", &self.login.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A function a plugin version exports: found by name once per version, and typechecked
/// against the host's bindings on the first instance that calls it.
///
/// Why not the generated `GuestIndices::load`: it typechecks the export (the whole Book Job
/// record, field by field) on every instance it is given, and with a fresh instance per
/// request that check was paid on every call. Every instance of one component has the same
/// export types, so one check per version and signature answers for all of them.
#[derive(Debug, Clone)]
pub struct Export {
    index: ComponentExportIndex,
    /// The signature (`std::any::type_name` of the parameters and results, which is
    /// lifetime-blind like the component model's types) an instance was checked against.
    checked: OnceLock<&'static str>,
}

impl Export {
    /// `function` of the exported `interface` in the component `pre` instantiates, if it
    /// exports that.
    pub fn find<T>(pre: &InstancePre<T>, interface: &str, function: &str) -> Option<Export> {
        let component = pre.component();
        let exported = component.get_export_index(None, interface)?;
        let index = component.get_export_index(Some(&exported), function)?;
        Some(Export {
            index,
            checked: OnceLock::new(),
        })
    }

    /// The function in `instance`, an instance of this version, typed as `P -> R`: checked
    /// the first time this signature is asked for, trusted after.
    pub fn typed<T, P, R>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let signature = std::any::type_name::<(P, R)>();
        if self.checked.get() == Some(&signature) {
            let func = instance
                .get_func(&mut *store, self.index)
                .ok_or_else(|| wasmtime::format_err!("the instance lacks its version's export"))?;
            return Ok(checked_before(func));
        }
        let typed = instance.get_typed_func::<P, R>(&mut *store, self.index)?;
        // The first signature checked is the one trusted; a caller asking for another one
        // is checked every time (the host asks for one per export).
        let _ = self.checked.set(signature);
        Ok(typed)
    }
}

/// `func` as `P -> R` without a typecheck.
#[allow(
    unsafe_code,
    reason = "the signature was checked on an instance of the same component, whose export types every instance shares"
)]
fn checked_before<P, R>(func: Func) -> TypedFunc<P, R>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    // SAFETY: only called by `Export::typed`, for the export of the component `index` was
    // found in, after `get_typed_func::<P, R>` succeeded on an instance of that component
    // (the signature recorded in `checked` is `P -> R`'s).
    unsafe { TypedFunc::new_unchecked(func) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine};

    /// A component exporting `book: func(x: u32) -> u32` (x + 1) in the followup interface.
    fn component(engine: &Engine) -> Component {
        let wat = r#"(component
            (core module $m
                (func (export "f") (param i32) (result i32)
                    local.get 0 i32.const 1 i32.add))
            (core instance $i (instantiate $m))
            (func $f (param "x" u32) (result u32) (canon lift (core func $i "f")))
            (instance $iface (export "book" (func $f)))
            (export "servicemobility:booking/followup@0.1.0" (instance $iface)))"#;
        Component::new(engine, wat::parse_str(wat).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn an_export_is_checked_once_per_signature_and_a_wrong_one_always_refused() {
        let engine = Engine::new(&Config::new()).unwrap();
        let pre = Linker::<()>::new(&engine)
            .instantiate_pre(&component(&engine))
            .unwrap();
        let (interface, _) = crate::contract::bindings::exported::BOOK;
        assert!(Export::find(&pre, interface, "search").is_none());
        assert!(Export::find(&pre, "servicemobility:booking/other@0.1.0", "book").is_none());
        let book = Export::find(&pre, interface, "book").unwrap();

        for x in [1u32, 41] {
            // A fresh instance each time, as a booking gets: the first is checked, the
            // second trusted.
            let mut store = Store::new(&engine, ());
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let f = book
                .typed::<_, (u32,), (u32,)>(&mut store, &instance)
                .unwrap();
            assert_eq!(f.call_async(&mut store, (x,)).await.unwrap(), (x + 1,));
            assert_eq!(
                book.checked.get(),
                Some(&std::any::type_name::<((u32,), (u32,))>())
            );
        }
        // Another signature is never trusted on the strength of the first one's check.
        for _ in 0..2 {
            let mut store = Store::new(&engine, ());
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let wrong = book.typed::<_, (&str,), (u32,)>(&mut store, &instance);
            assert!(wrong.is_err(), "a string parameter passed for a u32");
            let wrong = book.typed::<_, (u32,), (String,)>(&mut store, &instance);
            assert!(wrong.is_err(), "a string result taken from a u32");
        }
    }
}
