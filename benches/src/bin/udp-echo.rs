//! The ceiling for the load benchmark: a plain UDP echo server built exactly like the upgram
//! server's UDP side (one SO_REUSEPORT socket per worker, 4 MiB buffers, tokio tasks), which
//! answers every datagram with `REPLY_LEN` bytes at once.
//!
//! Usage: `udp-echo ADDR REPLY_LEN WORKERS` (prints the bound address on its first line).

use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr =
        args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse().map_err(std::io::Error::other)?;
    let reply_len: usize = args.next().unwrap_or_else(|| "600".into()).parse().map_err(std::io::Error::other)?;
    let workers: usize = args.next().unwrap_or_else(|| "2".into()).parse().map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(async move {
        let sockets = upgram_server::udp::bind(addr, workers)?;
        println!("{}", sockets[0].local_addr()?);
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|socket| {
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 2048];
                    let mut reply = vec![0u8; reply_len];
                    loop {
                        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                            continue;
                        };
                        // Echo the header (it carries the request id), pad to the reply size.
                        let head = len.min(reply_len).min(20);
                        reply[..head].copy_from_slice(&buffer[..head]);
                        let _ = socket.send_to(&reply, from).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}
