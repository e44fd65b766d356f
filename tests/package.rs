//! The Debian package and the production example's install recipe, each installed and
//! run in a throw-away copy of this host (`packaging/in-overlay.sh`: namespaces and an
//! overlay over `/`; Postfix is purged there only, and the script checks afterwards
//! that the host's /usr/sbin/sendmail and dpkg database did not change). The package
//! is built from the binaries this test run built (stripped, as a release build's are).

use std::path::Path;
use std::process::Command;

fn in_overlay(script: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mtad")).parent().unwrap();
    let mut cmd = Command::new(repo.join("packaging/in-overlay.sh"));
    cmd.arg(repo.join(script)).arg(bin_dir);
    // a target directory outside the repository is made visible in the overlay too
    if !bin_dir.starts_with(repo) {
        cmd.env("MTAD_OVERLAY_RO", bin_dir);
    }
    let out = cmd.output().expect("run packaging/in-overlay.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stderr}",
        out.status
    );
    assert!(stderr.trim_end().ends_with("== ok"), "{stderr}");
}

/// `dpkg -i` of the package, its files, mtad started as the systemd unit says (with
/// READY/RELOADING/STOPPING on NOTIFY_SOCKET) and as root (it becomes mtad), mail by
/// swaks and by bsd-mailx's `mail` through the installed sendmail, `dpkg --purge`.
#[test]
fn the_package_installs_runs_and_purges_in_a_throwaway_root() {
    in_overlay("packaging/tests/install.sh");
}

/// examples/production/mtad.service's install recipe, line by line as written, then
/// the unit's command lines, mail to the MX, a reload and a stop.
#[test]
fn the_production_example_installs_as_its_recipe_says() {
    in_overlay("packaging/tests/production-recipe.sh");
}
