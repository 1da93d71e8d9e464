//! A fault-injecting TCP proxy, put in front of a shard node so chaos runs
//! can cut or slow the network to it without root or special networking.
//!
//! Everything that reaches the node through the proxy (the coordinator's
//! calls and heartbeats, and replicas following it as their primary, since
//! they are given the address the coordinator knows) goes through the same
//! faults:
//!
//! - [`Fault::Partition`]: open connections are cut at once; new ones are
//!   accepted but nothing goes through, so callers time out as they would
//!   behind a dead link. Healing closes those and lets new ones through.
//! - [`Fault::Delay`]: every chunk of bytes, in both directions, waits this
//!   long before it is forwarded.
//!
//! Only traffic *to* the node passes its proxy: a replica's own stream to
//! its primary goes through the primary's proxy, so partitioning a replica
//! cuts the coordinator off from it but not it from its primary.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Partition,
    Delay(Duration),
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub address: String,
    /// Where traffic goes.
    pub backend: String,
    fault: watch::Sender<Fault>,
    /// Bumped to cut every open connection.
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<u64>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `backend`.
    pub fn start(backend: &str) -> std::io::Result<Proxy> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let address = std_listener.local_addr()?.to_string();
        let listener = TcpListener::from_std(std_listener)?;
        let (fault, fault_rx) = watch::channel(Fault::None);
        let (generation, generation_rx) = watch::channel(0u64);
        let connections = Arc::new(Mutex::new(0));
        let task = tokio::spawn(accept(listener, backend.to_string(), fault_rx, generation_rx, connections.clone()));
        Ok(Proxy { address, backend: backend.to_string(), fault, generation, task, connections })
    }

    /// Applies `fault` from now on (a partition also cuts open connections).
    pub fn set(&self, fault: Fault) {
        let before = *self.fault.borrow();
        self.fault.send_replace(fault);
        if fault == Fault::Partition || before == Fault::Partition {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self.connections.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(listener: TcpListener, backend: String, fault: watch::Receiver<Fault>, generation: watch::Receiver<u64>, connections: Arc<Mutex<u64>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        *connections.lock().unwrap() += 1;
        let _ = client.set_nodelay(true);
        let (fault, mut generation, backend) = (fault.clone(), generation.clone(), backend.clone());
        generation.mark_unchanged();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve(client, &backend, fault) => {}
                _ = generation.changed() => {} // cut: both sockets close
            }
        });
    }
}

async fn serve(client: TcpStream, backend: &str, fault: watch::Receiver<Fault>) {
    if *fault.borrow() == Fault::Partition {
        // Held open, silent, until the partition heals (which cuts it).
        std::future::pending::<()>().await;
    }
    let Ok(server) = TcpStream::connect(backend).await else { return };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Each direction ends on its own (a half-close goes through), so bytes
    // still in flight the other way are not lost.
    tokio::join!(pipe(client_read, server_write, fault.clone()), pipe(server_read, client_write, fault));
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, fault: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Err(_) => return,
            Ok(n) => n,
        };
        let now = *fault.borrow();
        match now {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Partition => std::future::pending::<()>().await,
            Fault::None => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await.map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_delays_partitions_and_heals() {
        let proxy = Proxy::start(&echo_server().await).unwrap();
        let mut stream = TcpStream::connect(&proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");

        proxy.set(Fault::Delay(Duration::from_millis(100)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");
        assert!(started.elapsed() >= Duration::from_millis(200), "two delayed hops");

        proxy.set(Fault::Partition);
        assert!(round_trip(&mut stream).await.is_err(), "an open connection is cut");
        let mut during = TcpStream::connect(&proxy.address).await.unwrap();
        assert!(round_trip(&mut during).await.is_err(), "a new connection gets nothing through");

        proxy.set(Fault::None);
        let mut after = TcpStream::connect(&proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut after).await.unwrap(), b"ping");
        assert!(proxy.connections() >= 3);
    }
}
