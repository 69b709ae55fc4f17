//! etcd through the etcd-client crate, on servers the harness starts.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Error, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use sg_tests::etcd::{Etcd, ROOT_USER};

use crate::runtime;

/// The value at `key`, or `None` if it has none.
async fn value(client: &mut Client, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let got = client.get(key, None).await?;
    Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
}

/// Connects with `opts` and reads a key; the error of whichever step fails.
/// Bounded so that a server that never answers fails the test rather than
/// hanging it.
async fn connect_and_get(etcd: &Etcd, opts: ConnectOptions) -> Result<(), Error> {
    let attempt = async {
        let mut client = Client::connect(etcd.endpoints(), Some(opts)).await?;
        client.get("/sg/test/probe", None).await.map(drop)
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .expect("the server answers (with a refusal) within 20 s")
}

fn status_message(e: &Error) -> &str {
    match e {
        Error::GRpcStatus(s) => s.message(),
        _ => "",
    }
}

#[test]
fn single_member_put_and_get() -> anyhow::Result<()> {
    let etcd = Etcd::single()?;
    runtime().block_on(async {
        let mut client = etcd.client().await?;
        let put = client.put("/sg/test/a", "one", None).await?;
        let got = client.get("/sg/test/a", None).await?;
        let kv = got.kvs().first().context("the key is there")?;
        assert_eq!(kv.value(), b"one");
        assert_eq!(
            Some(kv.mod_revision()),
            put.header().map(etcd_client::ResponseHeader::revision),
            "the key's revision is the put's"
        );
        assert_eq!(value(&mut client, "/sg/test/none").await?, None);
        Ok(())
    })
}

/// The fleet store's optimistic concurrency: a change is a transaction
/// conditioned on the revision it read; a second writer that read the same
/// revision loses and sees the winner's value.
#[test]
fn a_transaction_on_a_stale_mod_revision_is_refused() -> anyhow::Result<()> {
    let etcd = Etcd::single()?;
    runtime().block_on(async {
        let mut client = etcd.client().await?;
        let key = "/sg/test/group";
        client.put(key, "v1", None).await?;
        let read = client.get(key, None).await?;
        let rev = read.kvs()[0].mod_revision();

        let conditioned = |value: &str| {
            Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(key, None)])
        };
        let first = client.txn(conditioned("v2")).await?;
        assert!(first.succeeded(), "the first writer's condition holds");
        let second = client.txn(conditioned("v3")).await?;
        assert!(
            !second.succeeded(),
            "the second writer read a stale revision"
        );
        let answers = second.op_responses();
        let [TxnOpResponse::Get(current)] = answers.as_slice() else {
            panic!("the else branch's get answers");
        };
        assert_eq!(current.kvs()[0].value(), b"v2");
        assert_eq!(value(&mut client, key).await?.as_deref(), Some(&b"v2"[..]));
        Ok(())
    })
}

/// A watcher catching up from a revision gets the events since; from a
/// compacted revision it is cancelled with the compaction's revision, which
/// tells an agent to reload in full.
#[test]
fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() -> anyhow::Result<()>
{
    let etcd = Etcd::single()?;
    runtime().block_on(async {
        let mut client = etcd.client().await?;
        let key = "/sg/test/w";
        let mut revs = Vec::new();
        for v in ["1", "2", "3"] {
            let put = client.put(key, v, None).await?;
            revs.push(put.header().context("a header")?.revision());
        }
        client.compact(revs[2], None).await?;

        let mut from_kept = client
            .watch(key, Some(WatchOptions::new().with_start_revision(revs[2])))
            .await?;
        let event = loop {
            let resp = from_kept.message().await?.context("the watch goes on")?;
            assert!(!resp.canceled(), "a watch from a kept revision runs");
            if let Some(e) = resp.events().first() {
                break e.clone();
            }
        };
        let kv = event.kv().context("a put event has its key")?;
        assert_eq!((kv.value(), kv.mod_revision()), (&b"3"[..], revs[2]));

        let mut from_compacted = client
            .watch(key, Some(WatchOptions::new().with_start_revision(revs[0])))
            .await?;
        let cancelled = loop {
            let resp = from_compacted
                .message()
                .await?
                .context("the server answers")?;
            if resp.canceled() {
                break resp;
            }
            assert!(
                resp.events().is_empty(),
                "no events from a compacted revision"
            );
        };
        assert_eq!(cancelled.compact_revision(), revs[2]);
        Ok(())
    })
}

/// What a host's liveness record relies on: a key under a lease lives while
/// the lease is kept alive and goes when the keepalives stop.
#[test]
fn a_leased_key_lives_while_kept_alive_and_goes_after() -> anyhow::Result<()> {
    let etcd = Etcd::single()?;
    runtime().block_on(async {
        let mut client = etcd.client().await?;
        let key = "/sg/test/host";
        let lease = client.lease_grant(2, None).await?;
        let ttl = Duration::from_secs(u64::try_from(lease.ttl())?);
        client
            .put(key, "alive", Some(PutOptions::new().with_lease(lease.id())))
            .await?;

        let (mut keeper, mut answers) = client.lease_keep_alive(lease.id()).await?;
        let kept_until = Instant::now() + 2 * ttl;
        while Instant::now() < kept_until {
            keeper.keep_alive().await?;
            let answer = answers.message().await?.context("a keepalive answer")?;
            assert!(answer.ttl() > 0, "the lease is alive");
            tokio::time::sleep(ttl / 4).await;
        }
        assert!(
            value(&mut client, key).await?.is_some(),
            "kept past its ttl"
        );

        drop((keeper, answers));
        let deadline = Instant::now() + 5 * ttl;
        while value(&mut client, key).await?.is_some() {
            assert!(
                Instant::now() < deadline,
                "the key goes once its lease expires"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
}

/// A three-member cluster loses its leader: after an election it serves
/// every read and write again, and the member, once back, has every write
/// made while it was down.
///
/// Through a client of all three endpoints a call fails as unavailable
/// whenever the client's balancer picks the member that is down (about one
/// call in four: etcd-client does not leave out an endpoint it cannot
/// connect to), so that client retries such calls, as the fleet store must;
/// a client of the two live members needs no retry once a leader is elected.
#[test]
fn a_cluster_of_three_serves_with_its_leader_stopped() -> anyhow::Result<()> {
    let mut etcd = Etcd::three()?;
    let rt = runtime();
    let client = rt.block_on(etcd.client())?;
    rt.block_on(client.clone().put("/sg/test/c", "before", None))?;

    let leader = etcd.leader()?.context("the cluster has a leader")?;
    etcd.stop_member(leader);

    let key = "/sg/test/c";
    for i in 0..20 {
        let v = format!("during-{i}");
        rt.block_on(retried(|| {
            let (mut c, v) = (client.clone(), v.clone());
            async move { c.put(key, v, None).await }
        }))?;
        let got = rt.block_on(retried(|| {
            let mut c = client.clone();
            async move { c.get(key, None).await }
        }))?;
        assert_eq!(got.kvs()[0].value(), v.as_bytes());
    }
    let new_leader = etcd.leader()?.context("a new leader")?;
    assert_ne!(new_leader, leader);

    let live: Vec<String> = (0..etcd.len())
        .filter(|&i| i != leader)
        .map(|i| etcd.endpoint(i))
        .collect();
    let mut live = rt.block_on(Client::connect(live, Some(etcd.connect_options()?)))?;
    for i in 0..20 {
        let v = format!("live-{i}");
        rt.block_on(live.put(key, v.as_str(), None))?;
        assert_eq!(rt.block_on(value(&mut live, key))?, Some(v.into_bytes()));
    }

    etcd.start_member(leader)?;
    let mut back = rt.block_on(Client::connect(
        [etcd.endpoint(leader)],
        Some(etcd.connect_options()?),
    ))?;
    assert_eq!(
        rt.block_on(value(&mut back, key))?.as_deref(),
        Some(&b"live-19"[..]),
        "the member that was down has caught up"
    );
    Ok(())
}

/// Runs `call` until it does not fail as unavailable (a member down, no
/// leader yet, a request cut by the election) or unknown (a request written
/// to the connection of the member that was killed: tonic reports the broken
/// pipe as `Unknown`), for up to 15 s. Only for calls that may run twice: a
/// write that failed either way may still have been applied.
async fn retried<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Err(Error::GRpcStatus(s))
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[test]
fn tls_with_a_client_certificate_works_and_without_one_fails() -> anyhow::Result<()> {
    let etcd = Etcd::single_tls()?;
    let tls = etcd.tls().context("TLS files")?.clone();
    assert!(etcd.endpoint(0).starts_with("https://"));
    let rt = runtime();
    rt.block_on(async {
        let mut client = etcd.client().await?;
        client.put("/sg/test/t", "secure", None).await?;
        assert_eq!(
            value(&mut client, "/sg/test/t").await?.as_deref(),
            Some(&b"secure"[..])
        );

        let timeout = Duration::from_secs(2);
        let without = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_tls(tls.server_only_options()?);
        let refused = connect_and_get(&etcd, without).await;
        assert!(refused.is_err(), "no client certificate, no answer");

        let stranger = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_tls(tls.client_options(&tls.stranger_cert, &tls.stranger_key)?);
        let refused = connect_and_get(&etcd, stranger).await;
        assert!(refused.is_err(), "a certificate of another CA is refused");
        anyhow::Ok(())
    })?;
    // etcdctl with the harness's files, as an operator would.
    assert!(etcd.etcdctl(&["get", "/sg/test/t"])?.contains("secure"));
    Ok(())
}

#[test]
fn auth_with_the_password_works_and_a_wrong_one_fails() -> anyhow::Result<()> {
    let etcd = Etcd::single_auth()?;
    let password = etcd.root_password().context("a root password")?.to_owned();
    runtime().block_on(async {
        let mut client = etcd.client().await?;
        client.put("/sg/test/u", "mine", None).await?;
        assert_eq!(
            value(&mut client, "/sg/test/u").await?.as_deref(),
            Some(&b"mine"[..])
        );

        let wrong = ConnectOptions::new().with_user(ROOT_USER, format!("{password}-wrong"));
        let refused = connect_and_get(&etcd, wrong)
            .await
            .expect_err("a wrong password is refused");
        assert!(
            status_message(&refused).contains("authentication failed"),
            "refused for the password: {refused}"
        );

        let anonymous = connect_and_get(&etcd, ConnectOptions::new())
            .await
            .expect_err("no credentials, no answer");
        assert!(
            status_message(&anonymous).contains("user name is empty"),
            "refused for the missing user: {anonymous}"
        );
        anyhow::Ok(())
    })
}

/// The harness's two ways to take the store away: a paused member answers
/// nothing (a call times out) until resumed; a stopped one comes back on
/// its data directory with its data.
#[test]
fn harness_a_paused_member_answers_after_resume_and_a_restarted_one_keeps_its_data()
-> anyhow::Result<()> {
    let mut etcd = Etcd::single()?;
    let rt = runtime();
    let mut client = rt.block_on(etcd.client())?;
    rt.block_on(client.put("/sg/test/p", "kept", None))?;

    etcd.pause()?;
    let during = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), client.get("/sg/test/p", None)).await
    });
    assert!(during.is_err(), "a paused member does not answer");
    etcd.resume()?;
    assert_eq!(
        rt.block_on(value(&mut client, "/sg/test/p"))?.as_deref(),
        Some(&b"kept"[..])
    );

    etcd.stop();
    assert_eq!(etcd.pids(), Vec::<u32>::new(), "no member runs");
    etcd.restart()?;
    let mut client = rt.block_on(etcd.client())?;
    assert_eq!(
        rt.block_on(value(&mut client, "/sg/test/p"))?.as_deref(),
        Some(&b"kept"[..])
    );
    Ok(())
}

/// Dropping a cluster, one member paused, leaves no process, no directory
/// and no port taken.
#[test]
fn harness_a_dropped_etcd_leaves_no_process_directory_or_port() -> anyhow::Result<()> {
    let mut etcd = Etcd::three()?;
    etcd.pause_member(1)?;
    let pids = etcd.pids();
    assert_eq!(pids.len(), 3);
    let dir = etcd.dir().to_owned();
    let ports: Vec<u16> = etcd
        .endpoints()
        .iter()
        .map(|e| e.rsplit(':').next().and_then(|p| p.parse().ok()))
        .collect::<Option<_>>()
        .context("ports in the endpoints")?;
    drop(etcd);

    assert!(!dir.exists(), "{} removed", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "member {pid} killed and reaped"
        );
    }
    for port in ports {
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "port {port} free"
        );
    }
    Ok(())
}
