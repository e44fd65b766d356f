//! `mtactl test-policy` suites: the fuzzed text is a suite file (`case` and `dns`
//! nodes, envelopes, messages, expectations), read by the suite reader and run
//! against the policy of `fuzz/data/mtad.kdl` (hooks, header/body checks, aliases,
//! tables) exactly as `reload { require-tests }` runs its suites
//! (`test_policy::required`): every case's dry run, then every expectation checked.

use std::sync::{Arc, Mutex, OnceLock};

use mtad::config::Config;
use mtad::control::test_policy;
use mtad::policy::Pipeline;

fn policy() -> &'static Mutex<(Config, Arc<Pipeline>)> {
    static POLICY: OnceLock<Mutex<(Config, Arc<Pipeline>)>> = OnceLock::new();
    POLICY.get_or_init(|| {
        let path = crate::data_dir().join("mtad.kdl");
        match Pipeline::load(&path) {
            Ok((config, pipeline)) => Mutex::new((config, Arc::new(pipeline))),
            Err(e) => panic!(
                "fuzz/data/mtad.kdl does not load:\n{}",
                mtad::config::render(&e)
            ),
        }
    })
}

pub fn run(data: &[u8]) {
    let path = crate::write_scratch("suite.kdl", data);
    let mut guard = policy().lock().unwrap_or_else(|e| e.into_inner());
    let (config, pipeline) = &mut *guard;
    config.reload.require_tests = vec![path];
    match test_policy::required(config, pipeline) {
        Ok(_) => {}
        Err(lines) => {
            let _ = lines.len();
        }
    }
}
