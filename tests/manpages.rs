//! Man pages and shell completions (`mtad --generate-docs`, `mtactl --generate-docs`,
//! as packaging/build-deb.sh makes them): every option `--help` lists is on the page,
//! every subcommand has its page, mtad.kdl(5) has every section of
//! docs/configuration.md, and groff renders each page without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

fn generate() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().to_path_buf();
    for (bin, args) in [
        (env!("CARGO_BIN_EXE_mtad"), vec!["--generate-docs"]),
        (env!("CARGO_BIN_EXE_mtactl"), vec!["--generate-docs"]),
    ] {
        let out = Command::new(bin).args(args).arg(&share).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (dir, share)
}

fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The long options (`--config`) a `--help` text lists.
fn long_options(help: &str) -> Vec<String> {
    let mut found: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

fn page(share: &Path, section: &str, name: &str) -> String {
    let path = share.join(format!("man/man{section}/{name}.{section}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_option_and_subcommand_of_the_help_is_in_the_man_pages() {
    let (_dir, share) = generate();
    let mtad = page(&share, "8", "mtad");
    let options = long_options(&help(env!("CARGO_BIN_EXE_mtad"), &[]));
    assert!(options.contains(&"--allow-root".to_owned()), "{options:?}");
    for option in options {
        assert!(
            mtad.contains(&option.replace('-', "\\-")),
            "mtad(8) lacks {option}"
        );
    }
    assert!(
        !mtad.contains("generate\\-docs"),
        "hidden options stay hidden"
    );

    let top = help(env!("CARGO_BIN_EXE_mtactl"), &[]);
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 8, "{top}");
    let mtactl = page(&share, "1", "mtactl");
    for command in &commands {
        assert!(
            mtactl.contains(&command.replace('-', "\\-")),
            "mtactl(1) lacks {command}"
        );
        let sub = page(&share, "1", &format!("mtactl-{command}"));
        let sub_help = help(env!("CARGO_BIN_EXE_mtactl"), &[command]);
        for option in long_options(&sub_help) {
            assert!(
                sub.contains(&option.replace('-', "\\-")),
                "mtactl-{command}(1) lacks {option}"
            );
        }
    }
    let queue = page(&share, "1", "mtactl-queue-list");
    assert!(queue.contains("\\-\\-format"), "{queue}");

    let sendmail = page(&share, "1", "sendmail");
    for option in ["\\-t", "\\-i", "\\-f", "\\-b", "\\-C"] {
        assert!(sendmail.contains(option), "sendmail(1) lacks {option}");
    }
}

#[test]
fn the_configuration_page_has_every_section_of_the_reference() {
    let (_dir, share) = generate();
    let kdl = page(&share, "5", "mtad.kdl");
    let reference = include_str!("../docs/configuration.md");
    let mut sections = 0;
    for line in reference.lines() {
        if let Some(title) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            let plain = title.replace('`', "").replace('"', "'");
            assert!(
                kdl.contains(&format!("\"{plain}\"")),
                "mtad.kdl(5) lacks the section {title}"
            );
            sections += 1;
        }
    }
    assert!(sections > 20, "{sections}");
}

#[test]
fn groff_renders_every_page_without_a_warning() {
    let (_dir, share) = generate();
    let mut pages = 0;
    for section in ["1", "5", "8"] {
        for entry in std::fs::read_dir(share.join(format!("man/man{section}"))).unwrap() {
            let path = entry.unwrap().path();
            // as man(1) runs it: preconv for UTF-8, tbl for tables; every warning but
            // the typographic "cannot adjust line" of narrow table cells
            let out = Command::new("sh")
                .arg("-c")
                .arg("preconv \"$1\" | groff -man -t -Tutf8 -ww -Wbreak -z")
                .arg("sh")
                .arg(&path)
                .output()
                .expect("groff (groff-base) is installed");
            assert!(out.status.success(), "{}", path.display());
            assert!(
                out.stderr.is_empty(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            pages += 1;
        }
    }
    assert!(pages >= 4 + 10, "{pages}");
}

#[test]
fn the_completions_are_valid_scripts() {
    let (_dir, share) = generate();
    for name in ["mtad", "mtactl", "sendmail"] {
        let bash = share.join("bash-completion/completions").join(name);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(". {} && complete -p {name}", bash.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let zsh =
            std::fs::read_to_string(share.join(format!("zsh/vendor-completions/_{name}"))).unwrap();
        assert!(zsh.starts_with(&format!("#compdef {name}")), "{zsh}");
        let fish =
            std::fs::read_to_string(share.join(format!("fish/vendor_completions.d/{name}.fish")))
                .unwrap();
        assert!(fish.contains(&format!("complete -c {name}")), "{fish}");
    }
}
