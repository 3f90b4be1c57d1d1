//! Serving the UI: plain HTTP with axum on loopback, or https through rustls (the process's ring
//! provider) and hyper's connection server when `local_ui.tls` is set (required off loopback).
//! Both stop accepting when the agent shuts down.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::config::LocalUiConfig;

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Binds `config.listen` and serves `app` in the background; the bound address.
pub async fn serve(
    config: &LocalUiConfig,
    app: Router,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("local_ui.listen: cannot bind {}", config.listen))?;
    let addr = listener.local_addr()?;
    match &config.tls {
        None => {
            tokio::spawn(async move {
                let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stopped(shutdown))
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "local ui server ended");
                }
            });
        }
        Some(tls) => {
            let certs = CertificateDer::pem_file_iter(&tls.cert_path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!("local_ui.tls.cert_path: cannot read {}", tls.cert_path.display())
                })?;
            let key = PrivateKeyDer::from_pem_file(&tls.key_path)
                .with_context(|| format!("local_ui.tls.key_path: cannot read {}", tls.key_path.display()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let server = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("local_ui.tls: the certificate and key do not make a server identity")?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            tokio::spawn(serve_tls(listener, acceptor, app, shutdown));
        }
    }
    tracing::info!(%addr, tls = config.tls.is_some(), "local ui listening");
    Ok(addr)
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = std::pin::pin!(stopped(shutdown));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "local ui accept failed");
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "local ui tls handshake failed");
                    return;
                }
            };
            let service = app.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(ConnectInfo(peer));
                r.map(axum::body::Body::new)
            });
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "local ui connection ended");
            }
        });
    }
}
