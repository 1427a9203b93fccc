//! The service manager's view of the daemon: sd_notify messages (`READY=1` once listeners are
//! bound and the WAL is replayed, `STATUS=`, `WATCHDOG=1`, `RELOADING=1` with
//! `MONOTONIC_USEC=`, `STOPPING=1`, `EXTEND_TIMEOUT_USEC=` during a long start) and the
//! listening sockets systemd passes by socket activation (`LISTEN_FDS`, named by
//! `FileDescriptorName=`).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every message is a no-op,
//! so the daemon runs the same way by hand, in a container and under systemd.
//!
//! The one module with `unsafe`: a passed socket arrives as a bare descriptor number, which
//! only `OwnedFd::from_raw_fd` turns into a socket, and the `LISTEN_*` variables must be
//! removed from the environment (so that nothing the daemon starts inherits them), which Rust
//! makes unsafe because another thread could be reading the environment. Both happen once, in
//! [`PassedSockets::from_env`], before the runtime's threads exist.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends sd_notify messages when the service manager asked for them.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, if it is set.
    pub fn from_env() -> Notifier {
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "failed to notify the service manager");
        }
    }

    /// Start-up (or a reload) is complete.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload has begun; `ready` ends it. The monotonic time is what systemd ≥ 253 needs to
    /// match the message to its own `systemctl reload` (`Type=notify-reload`).
    pub fn reloading(&self) {
        self.send(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0)),
            NotifyState::Status("reloading the configuration"),
        ]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping: draining connections")]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Ask for `by` more time to start (or stop) than the unit's timeout allows.
    pub fn extend_timeout(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// The watchdog interval systemd enforces (`WatchdogSec=`), if it is on for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
    }
}

/// Keeps `EXTEND_TIMEOUT_USEC` flowing while a long step of the start (WAL replay) runs on the
/// current thread; stops when dropped.
pub struct StartupExtender {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How much more time each extension asks for, and how often one is sent.
const EXTEND_BY: Duration = Duration::from_secs(30);
const EXTEND_EVERY: Duration = Duration::from_secs(10);

impl StartupExtender {
    pub fn start(notifier: &Notifier) -> StartupExtender {
        if !notifier.enabled() {
            return StartupExtender { stop: None, thread: None };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let n = notifier.clone();
        n.extend_timeout(EXTEND_BY);
        let thread = std::thread::Builder::new()
            .name("lw-startup".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(EXTEND_EVERY) {
                    n.status("starting: replaying the write-ahead log");
                    n.extend_timeout(EXTEND_BY);
                }
            })
            .ok();
        StartupExtender { stop: Some(tx), thread }
    }
}

impl Drop for StartupExtender {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listening sockets passed by the service manager, by `FileDescriptorName=`.
#[derive(Debug, Default)]
pub struct PassedSockets {
    by_name: HashMap<String, Vec<OwnedFd>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("failed to read the sockets passed by the service manager (LISTEN_FDS): {0}")]
    ListenFds(std::io::Error),
    #[error(
        "the service manager passed a socket named {name:?} (FileDescriptorName=) that no listener is configured with; configured: {configured}"
    )]
    Unclaimed { name: String, configured: String },
}

impl PassedSockets {
    /// The sockets in `LISTEN_FDS` for this process (none when it is not set), which are then
    /// unset so that nothing the daemon starts inherits them.
    ///
    /// Call it before any other thread exists: it changes the environment.
    #[allow(unsafe_code)]
    pub fn from_env() -> Result<PassedSockets, SocketError> {
        let mut by_name: HashMap<String, Vec<OwnedFd>> = HashMap::new();
        // SAFETY: called from `cli::run` before the runtime (or any other thread) starts, so
        // removing the variables cannot race a reader.
        let fds =
            unsafe { sd_notify::listen_fds_with_names_and_unset_env() }.map_err(SocketError::ListenFds)?;
        for (fd, name) in fds {
            use std::os::fd::FromRawFd;
            // SAFETY: the service manager opened these descriptors for this process (LISTEN_PID
            // was checked); nothing else in the process knows or owns them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            by_name.entry(name).or_default().push(owned);
        }
        Ok(PassedSockets { by_name })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The sockets named `name`, taken out of the set.
    pub fn take(&mut self, name: &str) -> Vec<OwnedFd> {
        self.by_name.remove(name).unwrap_or_default()
    }

    /// The socket bound to `addr` whatever its name (one socket unit can pass 514 and 6514 under
    /// one name; the listeners are told apart by their configured address), taken out of the set.
    /// `ListenStream=514` binds `[::]:514`, which serves a listener configured on `0.0.0.0:514`.
    pub fn take_by_address(&mut self, addr: std::net::SocketAddr) -> Option<OwnedFd> {
        for fds in self.by_name.values_mut() {
            let Some(i) =
                fds.iter().position(|fd| local_addr(fd).is_some_and(|a| same_listen_address(a, addr)))
            else {
                continue;
            };
            let fd = fds.remove(i);
            self.by_name.retain(|_, v| !v.is_empty());
            return Some(fd);
        }
        None
    }

    /// Refuse sockets no listener claimed: a unit and a config that disagree on a name would
    /// otherwise leave a port open that nobody serves.
    pub fn ensure_all_claimed(&self, configured: &[String]) -> Result<(), SocketError> {
        match self.by_name.keys().next() {
            Some(name) => {
                Err(SocketError::Unclaimed { name: name.clone(), configured: configured.join(", ") })
            }
            None => Ok(()),
        }
    }
}

/// The local address of a passed listening socket (None for one that is not TCP).
fn local_addr(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    let dup = fd.try_clone().ok()?;
    std::net::TcpListener::from(dup).local_addr().ok()
}

/// The same port, and the same address or both "any" (IPv4 or IPv6).
fn same_listen_address(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || (a.ip().is_unspecified() && b.ip().is_unspecified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_matches_across_families() {
        let p = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(same_listen_address(p("[::]:514"), p("0.0.0.0:514")));
        assert!(same_listen_address(p("127.0.0.1:6514"), p("127.0.0.1:6514")));
        assert!(!same_listen_address(p("[::]:514"), p("0.0.0.0:6514")));
        assert!(!same_listen_address(p("127.0.0.1:514"), p("0.0.0.0:514")));
    }
}
