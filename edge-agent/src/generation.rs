//! One generation of supervised components: the pipeline built from one config plus the uplink,
//! started under a supervisor, and stopped (drained into the buffer) when a staged config
//! replaces it or the agent shuts down. `main` runs one generation after another; the buffer and
//! the local UI outlive them.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::buffer::Buffer;
use crate::config::AgentConfig;
use crate::logs::Logs;
use crate::pipeline;
use crate::state::ComponentState;
use crate::supervisor::{ComponentStatus, Escalation, Registry, Supervisor, SupervisorHandle};
use crate::uplink::UplinkComponent;

/// The exit status of an agent whose supervisor escalated (a component restarted too often).
pub const EXIT_ESCALATED: u8 = 3;

/// Whether the uplink of this generation has a session open.
pub fn uplink_connected(registry: &Registry) -> bool {
    registry.get("uplink").is_some_and(|s| matches!(&s.state, ComponentState::Uplink(u) if u.connected()))
}

/// Resolves once every pipeline stage (not the uplink) stopped, failed or is paused.
async fn stages_done(registry: &Registry, stage_names: &[String]) {
    let mut changes = registry.subscribe();
    let done = |r: &Registry| {
        stage_names.iter().all(|n| {
            r.get(n).is_some_and(|s| {
                matches!(
                    s.status,
                    ComponentStatus::Stopped | ComponentStatus::Failed | ComponentStatus::Paused
                )
            })
        })
    };
    while !done(registry) {
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// The supervised components built from one config.
pub struct Generation {
    pub supervisor: SupervisorHandle,
    pub registry: Registry,
    pub stage_names: Vec<String>,
    shutdown: watch::Sender<bool>,
    pub escalations: mpsc::UnboundedReceiver<Escalation>,
    /// The uplink's upload hold, shared with the local UI.
    pub uploads_paused: Arc<AtomicBool>,
}

impl Generation {
    pub async fn start(
        config: &AgentConfig,
        config_path: &Path,
        options: &pipeline::BuildOptions,
        buffer: &Buffer,
        reload: &mpsc::UnboundedSender<u64>,
        apply_failure: Option<(u64, String)>,
        logs: &Logs,
    ) -> anyhow::Result<Self> {
        let config_dir = config_path.parent().map(Path::to_path_buf);
        let pipeline = pipeline::build_on(config, config_dir.as_deref(), options, buffer.clone())
            .context("building pipeline")?;
        let registry = Registry::default();
        for (name, gauge) in pipeline.inboxes {
            registry.set_inbox(&name, gauge);
        }
        registry.start_sampling();
        let supervisor_handle = Arc::new(OnceLock::new());
        let uploads_paused = Arc::new(AtomicBool::new(false));
        let mut components = pipeline.components;
        let stage_names: Vec<String> = components.iter().map(|c| c.name()).collect();
        components.push(Arc::new(UplinkComponent {
            control_plane: config.control_plane.clone(),
            config_dir,
            agent_id: config.agent_id.clone(),
            site_id: config.site_id.clone(),
            config_version: config.config_version,
            config_path: config_path.to_owned(),
            buffer: pipeline.buffer.clone(),
            registry: registry.clone(),
            supervisor: supervisor_handle.clone(),
            reload: Some(reload.clone()),
            apply_failure,
            acked: Default::default(),
            commands: Default::default(),
            logs: logs.clone(),
            paused: uploads_paused.clone(),
            clock: Default::default(),
            test_cameras: pipeline.test_cameras,
            tracer: options.tracer.clone(),
        }));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (escalate_tx, escalations) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            config: config.supervision.clone(),
            registry: registry.clone(),
            shutdown: shutdown_rx,
            escalate: escalate_tx,
        }
        .start(components)
        .await?;
        let _ = supervisor_handle.set(supervisor.clone());
        Ok(Self { supervisor, registry, stage_names, shutdown, escalations, uploads_paused })
    }

    /// Stops the source and lets the stages drain into the buffer (within `grace`), then stops
    /// every component; what is buffered stays for the next generation's uplink.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(grace, stages_done(&self.registry, &self.stage_names)).await.is_err() {
            tracing::warn!("grace period over before the stages drained");
        }
        self.supervisor.shutdown().await;
    }

    /// 8. drain: stop the source, let the stages drain in order, let the uplink flush;
    /// 9. stop everything; nothing half-written is lost (buffer writes are transactions).
    ///
    /// `second_signal` ends the wait early (an operator's second Ctrl-C).
    pub async fn drain_and_flush(
        self,
        buffer: &Buffer,
        grace: Duration,
        second_signal: impl Future<Output = &'static str>,
    ) -> ExitCode {
        let Self { supervisor, registry, stage_names, shutdown, mut escalations, .. } = self;
        let deadline = tokio::time::Instant::now() + grace;
        let _ = shutdown.send(true);
        let drained = async {
            stages_done(&registry, &stage_names).await;
            tracing::info!(buffered = buffer.stats().captures, "pipeline drained, flushing uplink");
            let mut stats = buffer.subscribe();
            let _ = stats.wait_for(|s| s.captures == 0).await;
        };
        let code = tokio::select! {
            () = drained => { tracing::info!("buffer flushed"); ExitCode::SUCCESS }
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(buffered = buffer.stats().captures, "grace period over, unacked captures stay buffered");
                ExitCode::SUCCESS
            }
            name = second_signal => { tracing::warn!(signal = name, "second signal, stopping now"); ExitCode::SUCCESS }
            Some(escalation) = escalations.recv() => { eprintln!("error: {escalation}"); ExitCode::from(EXIT_ESCALATED) }
        };
        supervisor.shutdown().await;
        tracing::info!("agent stopped");
        code
    }
}
