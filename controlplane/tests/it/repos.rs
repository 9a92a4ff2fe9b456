//! Adding an existing repository verifies it first, through a chosen
//! host: a wrong password is refused with the reason and nothing is saved.

use rm_bus::msg::*;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn adding_an_existing_repository_verifies_it_and_a_wrong_password_saves_nothing() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    a.hello(0, vec![], vec![]).await;
    let key: api::PubKey = cp.call(api::PUBKEY, serde_json::json!({})).await;
    let host = a.host_id();
    let add = |password: &str| api::RepoAdd {
        name: "offsite".into(),
        secrets: api::SealedSecrets::seal(
            &api::RepoSecretsInput {
                url: "rest:http://u:p@127.0.0.1:1/offsite".into(),
                password: password.into(),
                env: Default::default(),
            },
            &key.xkey,
        )
        .unwrap(),
        init_on_host: None,
        verify_on_host: Some(host.clone()),
    };
    let reply = |ok: bool| QueryReply {
        v: PROTOCOL_VERSION,
        ok,
        error_kind: (!ok).then_some(ErrorKind::WrongPassword),
        error: (!ok).then(|| "Fatal: wrong password or no key found".into()),
        entries: vec![],
        snapshots: None,
        restic_repo_id: ok.then(|| "abcd1234".into()),
    };

    // a wrong password: refused with the reason, nothing saved
    let call = cp.call_raw::<_, api::RepoAdded>(api::REPO_ADD, add("wrong"));
    let answer = async {
        let (cmd, m) = a.next_command(WAIT).await.expect("verify sent");
        assert!(
            matches!(cmd.body, CommandBody::RepoVerify { .. }),
            "{cmd:?}"
        );
        a.answer(&m, encode(&reply(false))).await;
    };
    let (refused, ()) = tokio::join!(call, answer);
    let err = refused.unwrap_err();
    assert_eq!(err.code, "conflict");
    assert!(
        err.message.contains("wrong repository password"),
        "{}",
        err.message
    );
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    assert!(rm_store::repos::list(&mut c).await.unwrap().is_empty());
    drop(c);

    // the right one: saved as verified, with restic's repository id
    let call = cp.call_raw::<_, api::RepoAdded>(api::REPO_ADD, add("right"));
    let answer = async {
        let (_, m) = a.next_command(WAIT).await.expect("verify sent");
        a.answer(&m, encode(&reply(true))).await;
    };
    let (added, ()) = tokio::join!(call, answer);
    let added = added.unwrap();
    let mut c = db.read().await.unwrap();
    let r = rm_store::repos::get(&mut c, &added.repo_id).await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.restic_repo_id.as_deref()),
        ("ok", Some("abcd1234"))
    );
}
