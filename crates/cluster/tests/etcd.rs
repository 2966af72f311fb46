//! `EtcdCluster` against a real etcd (Debian's `etcd-server`; `scripts/cluster-deps.sh`
//! installs it). Skips, saying so, when no etcd binary is found.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{EtcdCluster, EtcdOptions};
use control::cluster::{Assignment, Assignments, ClusterError, Discovery, Member, Placement, Role};

struct Etcd {
    child: Child,
    _dir: tempdir::Dir,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd() -> Option<Etcd> {
    let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let (client, peer) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("fw-etcd-test-{}-{client}", std::process::id()));
    let child = Command::new(binary)
        .args(["--name", "t", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("t=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Etcd {
        child,
        _dir: tempdir::Dir(dir),
        url: format!("http://127.0.0.1:{client}"),
    })
}

async fn connect(etcd: &Etcd) -> std::sync::Arc<EtcdCluster> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EtcdCluster::connect(EtcdOptions {
            endpoints: vec![etcd.url.clone()],
            prefix: "/fwtest".into(),
            ttl_secs: 1,
            user: None,
        })
        .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("etcd did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        role: Role::Both,
        address: format!("http://{id}"),
        memory_bytes: 1 << 30,
        threads: 2,
        replicas: Vec::new(),
        lease: 0,
        ttl_secs: 0,
    }
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_leadership_and_fenced_placement_on_a_real_etcd() {
    let Some(etcd) = start_etcd() else {
        eprintln!("SKIPPED: no etcd binary (install etcd-server: scripts/cluster-deps.sh)");
        return;
    };
    let a = connect(&etcd).await;
    let b = connect(&etcd).await;
    a.register(member("a")).await.unwrap();
    b.register(member("b")).await.unwrap();
    let members = b.members();
    until("both members seen", || {
        (members.borrow().len() == 2).then_some(())
    })
    .await;
    assert!(members
        .borrow()
        .iter()
        .all(|m| m.lease != 0 && m.ttl_secs == 1));

    let lead = a.campaign("a").await.unwrap();
    let plan: Assignments = [(
        "smol".to_owned(),
        vec![Assignment {
            deployment: "smol".into(),
            index: 0,
            node: "b".into(),
        }],
    )]
    .into();
    a.publish(&lead, &plan).await.unwrap();
    let view = b.view();
    until("placement seen by the other process", || {
        (view.borrow().assignments == plan && view.borrow().leader.as_deref() == Some("a"))
            .then_some(())
    })
    .await;

    // b waits to lead; a leaves (its lease revoked): b leads, a's fence is refused.
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.campaign("b").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "b must not lead while a does");
    a.leave().await;
    let lead_b = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(lead_b.fence > lead.fence);
    assert_eq!(
        a.publish(&lead, &Assignments::new()).await,
        Err(ClusterError::Fenced)
    );
    until("a gone, b leader", || {
        let members = members.borrow();
        (members.len() == 1 && view.borrow().leader.as_deref() == Some("b")).then_some(())
    })
    .await;
    // Placements made before survive the change of leader; the new leader writes.
    assert_eq!(view.borrow().assignments, plan);
    b.publish(&lead_b, &Assignments::new()).await.unwrap();
    until("placement removed", || {
        view.borrow().assignments.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_etcd_is_an_error_at_connect() {
    let port = free_port();
    let err = EtcdCluster::connect(EtcdOptions {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        prefix: "/fwtest".into(),
        ttl_secs: 1,
        user: None,
    })
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
