//! Pausing the uplink holds uploads and keeps the session open: the flag the session loop reads,
//! and the component's status and event. The uplink's own command handler and the local UI both
//! come here.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::supervisor::{ComponentStatus, Registry};

/// Holds or releases uploads.
pub fn set_uploads_paused(
    paused: &AtomicBool,
    registry: &Registry,
    name: &str,
    pause: bool,
) -> Result<String, String> {
    let was = paused.swap(pause, Ordering::SeqCst);
    match (was, pause) {
        (false, true) => {
            registry.update(name, |s| {
                s.status = ComponentStatus::Paused;
                s.record("paused", "uploads held; the session stays open");
            });
            Ok(format!("{name} paused: uploads held, the session stays open"))
        }
        (true, false) => {
            registry.update(name, |s| {
                s.status = ComponentStatus::Running;
                s.record("resumed", "");
            });
            Ok(format!("resuming {name}"))
        }
        (true, true) => Err(format!("{name} is already paused")),
        (false, false) => Err(format!("{name} is not paused")),
    }
}
