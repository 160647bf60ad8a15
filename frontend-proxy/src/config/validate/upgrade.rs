//! `upgrade_configs` entries, which a connection manager and a route both
//! carry (the route's overrides the manager's).

use super::{Ctx, P};
use crate::config::raw;

/// Returns whether WebSocket is enabled by this entry.
pub(super) fn upgrade_config(cx: &mut Ctx, p: &P, u: &raw::UpgradeConfig) -> Option<bool> {
    cx.other(p, u, &[]);
    let kind = cx.req(p, "upgrade_type", &u.upgrade_type)?;
    if !kind.eq_ignore_ascii_case("websocket") {
        cx.error(&p.key("upgrade_type"), format!("upgrade type {kind:?} is not supported (websocket is)"));
        return None;
    }
    Some(cx.boolean(p, "enabled", &u.enabled, true))
}
