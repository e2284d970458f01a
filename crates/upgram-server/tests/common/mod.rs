//! Catalogs built in code, shared by the server's integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use upgram_core::Sha256Digest;
use upgram_core::records::{Record, RecordFile};
use upgram_core::version::Version;
use upgram_server::catalog::{Blob, Module, Release, ReleaseFile};
use upgram_server::server::Shared;

pub fn v(text: &str) -> Version<'static> {
    text.parse().expect("version")
}

pub fn blob(name: &str) -> Blob {
    Blob { sha256: Sha256Digest::of(name.as_bytes()), size: name.len() as u64 }
}

pub fn file(id: &str, version: &str) -> ReleaseFile {
    ReleaseFile { id: id.into(), version: v(version), blob: blob(&format!("{id}@{version}")), executable: false }
}

pub fn release(version: &str, files: Vec<ReleaseFile>) -> Release {
    Release::new(v(version), files)
}

pub fn module(id: &str, releases: Vec<Release>) -> Module {
    Module::new(id, releases)
}

/// An encoded record file with records `(id, content)`, ids ascending.
pub fn record_file(entries: &[(u64, &str)]) -> Vec<u8> {
    let records = entries.iter().map(|(id, content)| Record { id: *id, content: content.as_bytes() }).collect();
    RecordFile::from_records(records).expect("ids ascending, contents not empty").to_vec()
}

/// Module `id` with releases 1.0 … 1.9, release 1.N holding files `lib/part-0.so` … `part-N.so`
/// (changed in it), so answers vary with the version asked.
pub fn ten_releases(id: &str) -> Module {
    let releases = (0..10)
        .map(|minor| {
            let version = format!("1.{minor}");
            release(&version, (0..=minor).map(|i| file(&format!("lib/part-{i}.so"), &version)).collect())
        })
        .collect();
    module(id, releases)
}

/// A one-worker UDP server on 127.0.0.1, bound but not serving yet, so datagrams sent to it
/// first wait in its socket's buffer (a burst), and a client socket that gives up after 10 s
/// (a guard against a hang, not a timing assertion).
pub struct UdpBurst {
    runtime: tokio::runtime::Runtime,
    sockets: Vec<tokio::net::UdpSocket>,
    /// Where the server listens.
    pub server: SocketAddr,
    /// The client's socket.
    pub client: std::net::UdpSocket,
    stop: Option<watch::Sender<bool>>,
}

impl UdpBurst {
    pub fn bind() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let sockets = {
            let _guard = runtime.enter();
            upgram_server::udp::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap()
        };
        let server = sockets[0].local_addr().unwrap();
        // The replies to a whole burst may arrive before this thread reads any: room for them
        // all, as the server's own sockets have, or a busy machine drops some.
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        client.set_recv_buffer_size(upgram_server::udp::SOCKET_BUFFER_BYTES).unwrap();
        client.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let client: std::net::UdpSocket = client.into();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { runtime, sockets, server, client, stop: None }
    }

    /// Starts the worker on `shared`; it stops when this is dropped.
    pub fn serve(&mut self, shared: Arc<Shared>) {
        let (stop, stopped) = watch::channel(false);
        let _guard = self.runtime.enter();
        upgram_server::udp::serve(shared, std::mem::take(&mut self.sockets), stopped);
        self.stop = Some(stop);
    }

    /// The next datagram the client receives.
    pub fn receive(&self) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let (len, _) = self.client.recv_from(&mut buffer).expect("a reply");
        buffer[..len].to_vec()
    }
}

impl Drop for UdpBurst {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
    }
}
