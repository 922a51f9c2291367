//! Adaptive mode against a real server behind a latency-injecting proxy: the job backs off while
//! the destination is slow and recovers when the pressure ends.

mod common;

use std::time::Duration;

use common::*;
use mongoferry::engine::control::adaptive::{Action, AdaptiveConfig};
use mongoferry::engine::Strategy;
use mongoferry::run::copy;
use mongoferry::spec::JobSpec;
use mongoferry::testkit::FaultProxy;
use tokio_util::sync::CancellationToken;

#[test]
fn backs_off_under_latency_and_recovers() {
    TestEnv::start().run(|env| async move {
        let dst_port: u16 = env
            .dst
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let proxy = FaultProxy::start(dst_port).await.unwrap();
        let (s, d) = (env.src_db("adapt"), env.dst_db("adapt"));
        let docs = sample_docs(100_000, 256);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let target_ms = 150.0;
        let ns = format!("{s}.c:{d}.c");
        let spec = JobSpec {
            workers: Some(4),
            batch_size: Some(100),
            strategy: Some(Strategy::Stream),
            rate: Some(3_000.0),
            adaptive: Some(AdaptiveConfig {
                target_ms,
                max_workers: None,
                interval_ms: Some(500),
            }),
            ..JobSpec::new(&env.src, &proxy.uri(), &[&ns])
        }
        .validate()
        .unwrap();
        let prepared = copy::prepare(
            &spec,
            std::sync::Arc::new(mongoferry::state::MemoryStore::default()),
        )
        .await
        .unwrap();
        let adaptive = prepared.adaptive().expect("adaptive mode on");
        let control = prepared.control();
        let cancel = CancellationToken::new();
        let job = tokio::spawn(prepared.run(cancel.clone()));

        // Calm: full speed (3,000 docs/s, the operator's limit stays the upper bound).
        while adaptive.last().and_then(|d| d.latency_ms).is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calm = adaptive.view().decisions;
        assert!(
            calm.iter().all(|d| d.action != Action::Decrease),
            "{calm:#?}"
        );

        // Pressure: every request waits its turn behind 50 ms.
        proxy.set_delay(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_secs(8)).await;
        let pressed = adaptive.view().decisions;
        let first_back_off = pressed
            .iter()
            .position(|d| d.action == Action::Decrease)
            .unwrap_or_else(|| panic!("backed off: {pressed:#?}"));
        // Additive increase probes, multiplicative decrease answers: a sawtooth, mostly under
        // the target once backed off.
        let after = &pressed[first_back_off + 1..];
        let under = after
            .iter()
            .filter(|d| d.latency_ms.unwrap_or(0.0) <= target_ms)
            .count();
        assert!(
            under * 2 > after.len(),
            "latency mostly under the target: {pressed:#?}"
        );
        assert!(
            after.iter().any(|d| d.rate_cap.is_some()),
            "a cap holds the load down"
        );
        let mean = |ds: &[mongoferry::engine::control::adaptive::Decision]| {
            ds.iter().map(|d| d.docs_per_sec).sum::<f64>() / ds.len() as f64
        };
        let pressed_rate = mean(&pressed[pressed.len() - 6..]);

        // Relief: it ramps up again, to the operator's limit.
        proxy.set_delay(Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(8)).await;
        let relieved = adaptive.view().decisions;
        let relieved_rate = mean(&relieved[relieved.len() - 4..]);
        assert!(
            relieved_rate > pressed_rate * 1.3 && relieved_rate > 3_000.0 * 0.6,
            "rate recovers from {pressed_rate:.0} to {relieved_rate:.0} docs/s: {relieved:#?}"
        );
        assert_eq!(control.workers(), 4, "workers back to the operator's count");

        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), job)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            outcome,
            Err(mongoferry::engine::CopyError::Stopped)
        ));
        proxy.stop().await;
    });
}
