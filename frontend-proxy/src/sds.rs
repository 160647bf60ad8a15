//! SDS from files: every secret the listeners and clusters name in an SDS
//! file (`path_config_source`) is read at start, then watched while the
//! proxy runs. When the file, the certificate, key, CA or CRL files it
//! names, or its `watched_directory` change, the secret is read again and
//! swapped in ([`Secrets::replace`]): the listeners' new handshakes and the
//! clusters' new upstream connections use it, open connections keep theirs. A secret that cannot be read or loaded
//! is rejected with an error in the log, and the previous one stays in use.
//!
//! The files are polled (metadata once a second) rather than watched with
//! inotify (`notify`): the ways certificates are replaced — an atomic
//! rename, certbot re-pointing `live/` symlinks, a Kubernetes secret
//! mount swapping its `..data` symlink — all show as a new inode or
//! mtime of the path followed through its symlinks, which a poll sees
//! whatever the mechanism, while inotify needs a watch on each directory
//! of each symlink chain (the parent of every target, re-added after each
//! swap) to see the same. A few `stat`s a second cost nothing; a rotation
//! is seen within a second, which is what a certificate's lifetime needs.

use crate::config;
use crate::config::model::ListenerConfig;
use crate::metrics::SecretStats;
use crate::tls::ClientCertificate;
use crate::tls::{SdsFile, Secret, Secrets, TlsError, TrustedCa};
use crate::upstream::ClusterSpec;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    #[error("{yaml_path}: {path}: {message}")]
    Read { yaml_path: String, path: String, message: String },
    #[error("{yaml_path}: secret {name:?}: {source}")]
    Load { yaml_path: String, name: String, source: TlsError },
}

/// What a file looked like when it was last read: enough to tell that it
/// was replaced or rewritten (`None`: it could not be looked at).
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    // Followed through symlinks: a swapped link shows as another inode.
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// One SDS secret and what its files looked like when it was last read.
struct Watched {
    file: SdsFile,
    /// The files the secret names (certificate, key, CA), as last read.
    material: Vec<PathBuf>,
    /// Stamps of the SDS file, its watched directory and `material`, each
    /// taken before the file was read: a change after it is seen.
    seen: Vec<Stamp>,
    stats: Arc<SecretStats>,
}

impl Watched {
    fn own_stamps(file: &SdsFile) -> Vec<Stamp> {
        let mut s = vec![stamp(&file.path)];
        s.extend(file.watched_directory.as_deref().map(stamp));
        s
    }

    fn stamps(&self) -> Vec<Stamp> {
        let mut s = Self::own_stamps(&self.file);
        s.extend(self.material.iter().map(|p| stamp(p)));
        s
    }
}

/// A secret as read from its files, with the stamps taken before each read.
struct Reading {
    secret: Secret,
    material: Vec<PathBuf>,
    seen: Vec<Stamp>,
}

/// A secret file that could not be read: why, and the stamps taken before.
struct Unread {
    seen: Vec<Stamp>,
    message: String,
}

fn read(file: &SdsFile) -> Result<Reading, Unread> {
    let mut seen = Watched::own_stamps(file);
    let secret = match config::read_secret(file) {
        Ok(s) => s,
        Err(message) => return Err(Unread { seen, message }),
    };
    let material: Vec<PathBuf> = secret.files().into_iter().map(Path::to_path_buf).collect();
    seen.extend(material.iter().map(|p| stamp(p)));
    Ok(Reading { secret, material, seen })
}

/// Every SDS file of the listeners, loaded, and what watches them.
#[derive(Default)]
pub struct SecretWatch {
    secrets: Secrets,
    watched: Vec<Watched>,
}

impl SecretWatch {
    /// Reads and loads every secret `listeners` and `clusters` name in an SDS file.
    pub fn load(listeners: &[ListenerConfig], clusters: &[ClusterSpec]) -> Result<Self, Vec<SdsError>> {
        let mut files: Vec<&SdsFile> = Vec::new();
        for tls in listeners.iter().flat_map(|l| l.all_tls()) {
            files.extend(tls.certificate_secrets.iter());
            if let Some(TrustedCa::Sds(f)) = tls.client.as_ref().map(|c| &c.trusted_ca) {
                files.push(f);
            }
        }
        for tls in clusters.iter().filter_map(|c| c.tls.as_ref()) {
            if let Some(ClientCertificate::Sds(f)) = &tls.client_certificate {
                files.push(f);
            }
            if let Some(TrustedCa::Sds(f)) = &tls.trusted_ca {
                files.push(f);
            }
        }
        let mut secrets = Secrets::default();
        let mut watched: Vec<Watched> = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            if watched.iter().any(|w| &w.file == file) {
                continue;
            }
            let Reading { secret, material, seen } = match read(file) {
                Ok(r) => r,
                Err(Unread { message, .. }) => {
                    errors.push(SdsError::Read {
                        yaml_path: file.yaml_path.clone(),
                        path: file.path.display().to_string(),
                        message,
                    });
                    continue;
                }
            };
            if let Err(source) = secrets.insert(file, &secret) {
                errors.push(SdsError::Load { yaml_path: file.yaml_path.clone(), name: file.name.clone(), source });
                continue;
            }
            let stats = Arc::new(SecretStats::default());
            stats.update_attempt.fetch_add(1, Relaxed);
            stats.update_success.fetch_add(1, Relaxed);
            watched.push(Watched { file: file.clone(), material, seen, stats });
        }
        if errors.is_empty() {
            Ok(SecretWatch { secrets, watched })
        } else {
            Err(errors)
        }
    }

    /// The secrets, for the listeners' acceptors and the clusters.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Each secret's name and its `sds.<name>.*` statistics.
    pub fn stats(&self) -> Vec<(String, Arc<SecretStats>)> {
        self.watched.iter().map(|w| (w.file.name.clone(), w.stats.clone())).collect()
    }

    /// Whether any file is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Reads again every secret whose files changed since they were read.
    pub fn check(&mut self) {
        for w in &mut self.watched {
            if w.stamps() == w.seen {
                continue;
            }
            let (name, path) = (&w.file.name, w.file.path.display());
            w.stats.update_attempt.fetch_add(1, Relaxed);
            match read(&w.file) {
                Err(Unread { seen, message }) => {
                    w.seen = seen;
                    w.stats.update_rejected.fetch_add(1, Relaxed);
                    error!(secret = %name, file = %path, error = %message, "SDS secret update rejected; the previous one stays in use");
                }
                Ok(Reading { secret, material, seen }) => {
                    w.seen = seen;
                    w.material = material;
                    match self.secrets.replace(&w.file, &secret) {
                        Ok(()) => {
                            w.stats.update_success.fetch_add(1, Relaxed);
                            info!(secret = %name, file = %path, "SDS secret updated")
                        }
                        Err(e) => {
                            w.stats.update_rejected.fetch_add(1, Relaxed);
                            error!(secret = %name, file = %path, error = %e, "SDS secret update rejected; the previous one stays in use")
                        }
                    }
                }
            }
        }
    }

    /// Polls the files until `stop` is cancelled (the drain).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A few `stat`s, and small reads when something changed:
            // done in place rather than on a blocking thread.
            self.check();
        }
    }
}

/// The watch as a Pingora background service, stopped by the drain.
pub struct SecretService {
    pub watch: Mutex<Option<SecretWatch>>,
    pub stop: CancellationToken,
}

#[async_trait]
impl BackgroundService for SecretService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let watch = self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(watch) = watch {
            watch.run(self.stop.clone()).await;
        }
    }
}
