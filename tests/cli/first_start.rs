//! The control plane and the alerts role starting together, again and
//! again, on an empty data dir: both come up (neither trips over the other
//! creating the master key or opening the new database), and what each
//! encrypts opens with the one master key on disk, so nothing is lost at
//! the next restart.

use std::collections::BTreeMap;
use std::time::Duration;

use rm_bus::creds::Role;
use rm_bus::notify::{ChannelDef, WebhookChannel};
use rm_bus::subject::SvcRole;
use rm_store::secrets::MasterKey;
use rm_testkit::{TestBus, svc_call};
use tokio::sync::oneshot;

const ROUNDS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_and_alerts_starting_together_on_an_empty_data_dir_share_one_master_key() {
    let bus = TestBus::start().await.unwrap();
    let web = bus.connect_role(Role::Web).await.unwrap();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cp_config = rm_controlplane::Config {
            data_dir: data.clone(),
            db_path: None,
            bus_urls: vec![bus.url()],
            agent_bus_urls: vec![bus.url()],
            authority: bus.authority().clone(),
            server_url: "https://cp.test".into(),
            server_fingerprint: None,
            timings: rm_controlplane::Timings::default(),
            clock: rm_bus::clock::system(),
        };
        let creds = bus.creds_for(&Role::Alerts).unwrap();
        let alerts_config = rm_alerts::Config {
            data_dir: data.clone(),
            db_path: None,
            connect: bus.spec(&Role::Alerts, creds),
            notifier_xkey: nkeys::XKey::new().public_key(),
            ui_base_url: None,
            timings: rm_alerts::Timings::default(),
            anomaly: Default::default(),
            clock: rm_bus::clock::system(),
        };
        let (cp_stop, cp_stopped) = oneshot::channel::<()>();
        let (al_stop, al_stopped) = oneshot::channel::<()>();
        let cp = tokio::spawn(rm_controlplane::run(cp_config, async move {
            let _ = cp_stopped.await;
        }));
        let alerts = tokio::spawn(rm_alerts::run(alerts_config, async move {
            let _ = al_stopped.await;
        }));

        // Both answer (a role that failed its first start never does).
        let call = |role: SvcRole, verb: &'static str, body: serde_json::Value| {
            svc_call::<_, serde_json::Value>(
                &web,
                role,
                rm_bus::subject::Verb::new(verb),
                body,
                Duration::from_secs(10),
            )
        };
        let cp_key = call(SvcRole::Controlplane, "pubkey", serde_json::json!({}))
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: control plane: {e:?} {:?}", cp.is_finished())
            });
        let alerts_key = call(SvcRole::Alerts, "pubkey", serde_json::json!({}))
            .await
            .unwrap_or_else(|e| panic!("round {round}: alerts: {e:?} {:?}", alerts.is_finished()));

        // Each stores a secret with the master key it holds.
        let repo = rm_controlplane::api::SealedSecrets::seal(
            &rm_controlplane::api::RepoSecretsInput {
                url: "rest:http://127.0.0.1:1/r".into(),
                password: "pw".into(),
                env: BTreeMap::new(),
            },
            cp_key["xkey"].as_str().unwrap(),
        )
        .unwrap();
        let added = call(
            SvcRole::Controlplane,
            "repo-add",
            serde_json::json!({"name": "r", "secrets": repo, "init_on_host": null}),
        )
        .await
        .unwrap();
        let def = ChannelDef::Webhook(WebhookChannel {
            url: "https://hooks.test/x".into(),
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            headers: BTreeMap::new(),
        });
        let sealed =
            rm_alerts::api::SealedChannel::seal(&def, alerts_key["xkey"].as_str().unwrap())
                .unwrap();
        let channel = call(
            SvcRole::Alerts,
            "channel-create",
            serde_json::json!({"name": "ops", "enabled": true, "definition": sealed}),
        )
        .await
        .unwrap();

        let _ = cp_stop.send(());
        let _ = al_stop.send(());
        cp.await.unwrap().unwrap();
        alerts.await.unwrap().unwrap();

        // What the next start loads opens both.
        let on_disk = MasterKey::load_or_create(&data).unwrap();
        let store = rm_store::Store::open(&data.join("restic-manager.db"))
            .await
            .unwrap();
        let mut c = store.read().await.unwrap();
        let repo_id = added["repo_id"].as_str().unwrap();
        let r = rm_store::repos::get(&mut c, repo_id).await.unwrap();
        on_disk
            .decrypt(&r.secrets_enc, &rm_controlplane::secrets::repo_aad(repo_id))
            .unwrap_or_else(|e| {
                panic!("round {round}: the control plane's key is not on disk: {e}")
            });
        let channel_id = channel["id"].as_str().unwrap();
        let ch = rm_store::channels::get(&mut c, channel_id).await.unwrap();
        on_disk
            .decrypt(
                ch.secrets_enc
                    .as_deref()
                    .expect("the webhook secret is stored"),
                &format!("channel:{channel_id}"),
            )
            .unwrap_or_else(|e| panic!("round {round}: the alerts role's key is not on disk: {e}"));
        drop(c);
        store.close().await;
    }
}
