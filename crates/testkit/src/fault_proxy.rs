//! A TCP fault proxy for network-fault tests: it listens on 127.0.0.1,
//! forwards every connection to one real server, and misbehaves on
//! command, as a bad network would between DeltaForge and that server.
//!
//! Faults ([`FaultProxy::set`], [`FaultProxy::reset_all`]):
//!
//! - [`Fault::Pass`]: forwards bytes both ways as they come;
//! - [`Fault::Delay`]: forwards each chunk after a delay;
//! - [`Fault::Stall`]: stops forwarding in both directions without closing
//!   anything (no FIN, no RST), for open and new connections alike: the
//!   half-dead link that hangs a client without timeouts for ever. Back to
//!   `Pass`, the bytes held resume where they stopped;
//! - [`Fault::Blackhole`]: new connections are accepted and then never
//!   forwarded nor closed (a connect that "succeeds" into silence); open
//!   ones keep working. A blackholed connection stays dead after the fault
//!   ends: the client must give up on it and connect again;
//! - [`FaultProxy::reset_all`]: closes every open connection, on both of
//!   its sides, with a TCP RST (`SO_LINGER` 0, then drop);
//! - [`FaultProxy::stick_open`]: the connections open now stall for good
//!   (as a stuck NAT entry or a dead peer behind a proxy would leave them),
//!   while new ones pass: a client recovers only if it gives up on the stuck
//!   connection by itself.
//!
//! The proxy runs on a thread of its own with its own tokio runtime, so a
//! test drives it from plain blocking code. It never fakes the server: what
//! it forwards is the real server's bytes, unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the bytes of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward as they come.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Forward nothing, close nothing.
    Stall,
    /// Accept new connections and never forward nor close them.
    Blackhole,
}

/// The proxy's shared state: the current fault and the reset generation.
struct Control {
    fault: watch::Sender<Fault>,
    resets: watch::Sender<u64>,
    accepted: AtomicU64,
    open: AtomicUsize,
    /// Connections numbered below this stall for good.
    stuck_below: watch::Sender<u64>,
}

/// A running fault proxy (see the module docs). Dropping it stops the
/// listener and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) forwarding to `target`.
    ///
    /// # Panics
    /// If it cannot bind.
    pub fn start(target: SocketAddr) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address"), target)
    }

    /// Starts a proxy listening on `listen` (e.g. a port a server must
    /// advertise, chosen beforehand) forwarding to `target`.
    ///
    /// # Panics
    /// If it cannot bind.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> Self {
        let (fault, _) = watch::channel(Fault::Pass);
        let (resets, _) = watch::channel(0u64);
        let (stuck_below, _) = watch::channel(0u64);
        let control =
            Arc::new(Control { fault, resets, accepted: AtomicU64::new(0), open: AtomicUsize::new(0), stuck_below });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let ctl = control.clone();
        std::thread::Builder::new()
            .name(format!("fault-proxy-{target}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
                rt.block_on(async move {
                    let listener = match TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    tokio::select! {
                        _ = accept_loop(listener, target, ctl) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task (and socket).
            })
            .expect("proxy thread");
        let addr = addr_rx.recv().expect("proxy thread started").unwrap_or_else(|e| panic!("binding {listen}: {e}"));
        FaultProxy { addr, target, control, stop: Some(stop_tx) }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets the fault from now on (see [`Fault`]).
    pub fn set(&self, fault: Fault) {
        self.control.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.control.fault.borrow()
    }

    /// Closes every open connection with a TCP RST on both sides.
    pub fn reset_all(&self) {
        self.control.resets.send_modify(|n| *n += 1);
    }

    /// Stalls the connections open now for good (no FIN, no RST, until the
    /// client closes them or a reset); later connections are not affected.
    pub fn stick_open(&self) {
        let accepted = self.control.accepted.load(Ordering::SeqCst);
        self.control.stuck_below.send_replace(accepted);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now (blackholed ones included).
    pub fn open(&self) -> usize {
        self.control.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, ctl: Arc<Control>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let number = ctl.accepted.fetch_add(1, Ordering::SeqCst);
        ctl.open.fetch_add(1, Ordering::SeqCst);
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let blackholed = *ctl.fault.borrow() == Fault::Blackhole;
            let resets = ctl.resets.subscribe();
            if blackholed {
                hold(client, resets).await;
            } else if let Ok(server) = TcpStream::connect(target).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let stuck = Stuck { number, below: ctl.stuck_below.subscribe() };
                forward(client, server, ctl.fault.subscribe(), resets, stuck).await;
            } else {
                abort(&client);
            }
            ctl.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A blackholed connection: its bytes are read and dropped, it is never
/// forwarded and never closed by the proxy, until the client closes it or
/// a reset.
async fn hold(mut client: TcpStream, mut resets: watch::Receiver<u64>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = resets.changed() => {
                abort(&client);
                return;
            }
            r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
        }
    }
}

/// Closes with RST instead of FIN when dropped.
fn abort(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Forwards both ways, obeying the fault, until either side closes (then
/// the other side's write half is shut down, a FIN) or a reset (RST both).
/// A connection's number and the bound below which connections are stuck.
struct Stuck {
    number: u64,
    below: watch::Receiver<u64>,
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    mut fault: watch::Receiver<Fault>,
    mut resets: watch::Receiver<u64>,
    mut stuck: Stuck,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        let now = *fault.borrow_and_update();
        // A blackhole concerns new connections only.
        let flowing = now != Fault::Stall && stuck.number >= *stuck.below.borrow_and_update();
        let delay = if let Fault::Delay(d) = now { d } else { Duration::ZERO };
        tokio::select! {
            _ = resets.changed() => {
                abort(cr.as_ref());
                abort(sr.as_ref());
                // A write half shuts its direction down (FIN) when dropped:
                // forgotten, the close is the RST alone.
                cw.forget();
                sw.forget();
                return;
            }
            _ = fault.changed() => {}
            _ = stuck.below.changed() => {}
            r = cr.read(&mut up), if flowing && up_open => {
                up_open = pass_on(r, &up, &mut sw, delay, &mut resets).await;
            }
            r = sr.read(&mut down), if flowing && down_open => {
                down_open = pass_on(r, &down, &mut cw, delay, &mut resets).await;
            }
        }
    }
}

/// Writes what one read returned to the other side, after `delay`;
/// returns whether this direction is still open. A reset while waiting
/// leaves the write undone (the caller sees the reset next).
async fn pass_on(
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut OwnedWriteHalf,
    delay: Duration,
    resets: &mut watch::Receiver<u64>,
) -> bool {
    let n = match read {
        Ok(0) | Err(_) => {
            let _ = to.shutdown().await;
            return false;
        }
        Ok(n) => n,
    };
    let write = async {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        to.write_all(&buf[..n]).await.is_ok()
    };
    tokio::select! {
        ok = write => ok,
        _ = resets.changed() => {
            // Seen again by the caller's `select!`, which aborts both sides.
            resets.mark_changed();
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::{Fault, FaultProxy};

    /// A real echo server on a thread of its own (one thread per client).
    fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn client(proxy: &FaultProxy) -> TcpStream {
        let c = TcpStream::connect(proxy.addr()).unwrap();
        // Long enough for a loaded machine, short enough for the tests that
        // expect silence.
        c.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
        c
    }

    /// Sends `msg` and reads it back; the error of the read otherwise.
    fn echo(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    fn is_timeout(e: &std::io::Error) -> bool {
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }

    #[test]
    fn passes_bytes_both_ways() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = client(&proxy);
        assert_eq!(echo(&mut c, b"hello").unwrap(), b"hello");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = c.try_clone().unwrap();
        let sent = big.clone();
        let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut got = vec![0u8; big.len()];
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.read_exact(&mut got).unwrap();
        t.join().unwrap();
        assert!(got == big, "the bytes came back changed");
        assert_eq!(proxy.accepted(), 1);
    }

    #[test]
    fn delay_holds_each_chunk() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = client(&proxy);
        proxy.set(Fault::Delay(Duration::from_millis(150)));
        let t = Instant::now();
        assert_eq!(echo(&mut c, b"x").unwrap(), b"x");
        // Delayed on the way there and on the way back.
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    }

    #[test]
    fn stall_forwards_nothing_closes_nothing_and_resumes() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = client(&proxy);
        assert_eq!(echo(&mut c, b"before").unwrap(), b"before");
        proxy.set(Fault::Stall);
        c.write_all(b"during").unwrap();
        let mut buf = [0u8; 6];
        let e = c.read(&mut buf).expect_err("nothing may come back during a stall");
        assert!(is_timeout(&e), "a stall must not close the connection: {e}");
        // A new connection during the stall is accepted but silent too.
        let mut c2 = client(&proxy);
        assert!(is_timeout(&echo(&mut c2, b"new").unwrap_err()));
        proxy.set(Fault::Pass);
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"during", "the held bytes resume");
        let mut buf2 = [0u8; 3];
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c2.read_exact(&mut buf2).unwrap();
        assert_eq!(&buf2, b"new");
    }

    #[test]
    fn reset_closes_open_connections_with_rst_and_new_ones_work() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = client(&proxy);
        assert_eq!(echo(&mut c, b"a").unwrap(), b"a");
        proxy.reset_all();
        std::thread::sleep(Duration::from_millis(200));
        let mut buf = [0u8; 1];
        let r = c.read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "expected a RST (connection reset), got {r:?}"
        );
        let mut c2 = client(&proxy);
        assert_eq!(echo(&mut c2, b"b").unwrap(), b"b");
        assert_eq!(proxy.accepted(), 2);
    }

    #[test]
    fn stick_open_stalls_open_connections_for_good_and_new_ones_pass() {
        let proxy = FaultProxy::start(echo_server());
        let mut old = client(&proxy);
        assert_eq!(echo(&mut old, b"a").unwrap(), b"a");
        proxy.stick_open();
        assert!(is_timeout(&echo(&mut old, b"b").unwrap_err()), "a stuck connection answers nothing");
        let mut new = client(&proxy);
        assert_eq!(echo(&mut new, b"c").unwrap(), b"c", "new connections pass");
        let mut buf = [0u8; 1];
        assert!(is_timeout(&old.read(&mut buf).unwrap_err()), "the stuck connection stays stuck");
        proxy.reset_all();
        std::thread::sleep(Duration::from_millis(200));
        assert!(matches!(old.read(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionReset));
    }

    #[test]
    fn blackhole_swallows_new_connections_only_and_they_stay_dead() {
        let proxy = FaultProxy::start(echo_server());
        let mut open = client(&proxy);
        // Forwarding (accepted before the blackhole began).
        assert_eq!(echo(&mut open, b"o").unwrap(), b"o");
        proxy.set(Fault::Blackhole);
        let mut dead = client(&proxy);
        assert!(is_timeout(&echo(&mut dead, b"x").unwrap_err()), "a blackholed connection answers nothing");
        assert_eq!(echo(&mut open, b"y").unwrap(), b"y", "connections made before keep working");
        proxy.set(Fault::Pass);
        let mut buf = [0u8; 1];
        dead.write_all(b"z").unwrap();
        assert!(is_timeout(&dead.read(&mut buf).unwrap_err()), "a blackholed connection stays dead");
        let mut fresh = client(&proxy);
        assert_eq!(echo(&mut fresh, b"w").unwrap(), b"w");
        assert_eq!(proxy.open(), 3);
        drop(dead);
        assert!(
            crate::wait_for(Duration::from_secs(5), || (proxy.open() == 2).then_some(())).is_some(),
            "a blackholed connection is released when its client closes it"
        );
    }
}
