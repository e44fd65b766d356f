//! The KDL configuration loader: the text parsed as the file `fuzz/data/mtad.kdl`
//! (so that relative `file=`, `hook` and `include` paths find the tables, checks and
//! hooks there; a path that names nothing is an error like any other), compiled into
//! a policy when it is valid, and its required test suites run: what `mtactl check`
//! does (`control::load_live`), without the file read. Errors are rendered as
//! `mtactl check` prints them (miette, with the source line).

use mtad::config::{Config, render};
use mtad::control::test_policy;
use std::sync::Arc;

use mtad::policy::Pipeline;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let name = crate::data_dir().join("mtad.kdl");
    let name = name.to_string_lossy();
    check(&name, &text);
}

/// Parses, compiles and renders like `mtactl check` (shared with the other targets
/// that go through a configuration).
pub fn check(name: &str, text: &str) -> Option<(Config, Arc<Pipeline>)> {
    let config = match Config::parse(name, text) {
        Ok(config) => config,
        Err(errors) => {
            let _ = render(&errors);
            return None;
        }
    };
    let _ = mtad::control::summary(&config);
    let pipeline = match Pipeline::build(&config) {
        Ok(p) => Arc::new(p),
        Err(errors) => {
            let _ = render(&errors);
            return None;
        }
    };
    let _ = pipeline.revision();
    let _ = test_policy::required(&config, &pipeline);
    Some((config, pipeline))
}
