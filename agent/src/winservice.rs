//! The Windows service entry point: `restic-manager-agent run
//! --windows-service` (what `install` registers) hands the process to the
//! Service Control Manager, reports Running, and turns the SCM's Stop and
//! Shutdown into the agent's clean shutdown. Only compiled on Windows —
//! which this project's build machines cannot do — so it is kept to this
//! one small file.

use std::ffi::OsString;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Result, anyhow};
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::Settings;

pub const SERVICE_NAME: &str = "restic-manager-agent";

static SETTINGS: OnceLock<Settings> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Runs the agent under the SCM; returns when the service has stopped.
pub fn run_as_service(settings: Settings) -> Result<()> {
    let _ = SETTINGS.set(settings);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .map_err(|e| anyhow!("starting the service dispatcher: {e}"))
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!(error = %e, "the agent service failed");
    }
}

fn status(state: ServiceState, accept: ServiceControlAccept, code: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: Duration::default(),
        process_id: None,
    }
}

fn run_service() -> Result<()> {
    let settings = SETTINGS
        .get()
        .cloned()
        .ok_or_else(|| anyhow!("service started without settings"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let handler = move |event| -> ServiceControlHandlerResult {
        match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(tx) = stop_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .map_err(|e| anyhow!("registering the service control handler: {e}"))?;
    handle
        .set_service_status(status(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        ))
        .map_err(|e| anyhow!("reporting Running: {e}"))?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(crate::run(settings, async move {
                let _ = stop_rx.await;
            }))
        });
    let code = u32::from(result.is_err());
    let _ = handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        code,
    ));
    result
}
