//! `pull`'s client side against a scripted source (a bare HTTP server on loopback): files
//! without a hash, listings without end, and revision names that would move the staging
//! directory are all refused before anything is downloaded.

use std::time::{Duration, Instant};

use hub::remote::Source;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves every request with `head` and then `body` chunks from `body(i)` until it returns
/// `None`; returns the source URL base.
async fn serve(head: &'static str, body: fn(usize) -> Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut i = 0;
                while let Some(chunk) = body(i) {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            });
        }
    });
    format!("http://{addr}")
}

const JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";

async fn snapshot(base: &str) -> Result<hub::remote::Snapshot, hub::HubError> {
    let source = Source::parse(&format!("{base}/org/name")).expect("source");
    let http = hub::remote::http_client().expect("client");
    source.snapshot(&http, "main", None).await
}

#[tokio::test]
async fn a_file_without_a_hash_is_refused() {
    let base = serve(JSON, |i| {
        (i == 0).then(|| {
            br#"{"sha":"0123456789012345678901234567890123456789","siblings":[
                {"rfilename":"ok.txt","size":2,"blobId":"0123456789012345678901234567890123456789"},
                {"rfilename":"model.bin","size":5}]}"#
                .to_vec()
        })
    })
    .await;
    let err = snapshot(&base).await.expect_err("refused").to_string();
    assert!(
        err.contains("model.bin") && err.contains("without a sha256"),
        "{err}"
    );
}

#[tokio::test]
async fn a_revision_named_dot_dot_is_refused() {
    let base = serve(JSON, |i| {
        (i == 0).then(|| br#"{"sha":"..","siblings":[]}"#.to_vec())
    })
    .await;
    let err = snapshot(&base).await.expect_err("refused").to_string();
    assert!(err.contains("bad revision"), "{err}");
    let source = Source::parse(&format!("{base}/org/name")).expect("source");
    let http = hub::remote::http_client().expect("client");
    assert!(source.snapshot(&http, "-x", None).await.is_err());
}

#[tokio::test]
async fn an_endless_listing_is_cut_off() {
    // `{"siblings":[` and then 1 MiB of spaces forever.
    let base = serve(JSON, |i| {
        Some(if i == 0 {
            br#"{"siblings":["#.to_vec()
        } else {
            vec![b' '; 1 << 20]
        })
    })
    .await;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), snapshot(&base))
        .await
        .expect("bounded")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("larger than"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
