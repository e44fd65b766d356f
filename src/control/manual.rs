//! Man pages and shell completions, made from what `--help` is made of: each binary's
//! clap definition (clap_mangen, clap_complete), and `docs/configuration.md` for
//! mtad.kdl(5) ([`config_page`]). Nothing here is written by hand, so nothing drifts:
//! the package build asks the binaries for them (`mtad --generate-docs DIR`, `mtactl
//! --generate-docs DIR`: [`requested`], looked for before clap parses the command line,
//! so that it is in no help text, page or completion) and installs what they write:
//!
//! ```text
//! DIR/man/man8/mtad.8                 DIR/bash-completion/completions/mtad
//! DIR/man/man1/mtactl.1, mtactl-*.1   DIR/zsh/vendor-completions/_mtad
//! DIR/man/man1/sendmail.1             DIR/fish/vendor_completions.d/mtad.fish
//! DIR/man/man5/mtad.kdl.5             (and the same for mtactl and sendmail)
//! ```
//!
//! DIR is the package's `/usr/share`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use pulldown_cmark::{Alignment, Event, HeadingLevel, Options, Tag, TagEnd};

/// The configuration reference the mtad.kdl(5) page is made from.
pub const CONFIGURATION_MD: &str = include_str!("../../docs/configuration.md");

/// A page or a completion file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct GenerateError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// `PROGRAM --generate-docs DIR`, exactly: the directory to write to.
pub fn requested() -> Option<PathBuf> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [flag, dir] if flag == "--generate-docs" => Some(PathBuf::from(dir)),
        _ => None,
    }
}

/// Writes the pages and completions of `commands` (name, definition) under `dir`, and
/// mtad.kdl(5) when `config_page`; the exit status, with the error on stderr.
pub fn generate(
    dir: &Path,
    commands: Vec<(&str, clap::Command)>,
    config_page: bool,
) -> std::process::ExitCode {
    let written = commands
        .into_iter()
        .try_for_each(|(name, cmd)| write_command(name, cmd, dir).map(|_| ()))
        .and_then(|()| {
            if config_page {
                write_config_page(dir).map(|_| ())
            } else {
                Ok(())
            }
        });
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let program = std::env::args().next().unwrap_or_default();
            eprintln!("{program}: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The man section of a command: the daemon is a system administration command (8),
/// the others are user commands (1), as Postfix's sendmail(1) and postqueue(1).
fn section(name: &str) -> &'static str {
    if name == "mtad" { "8" } else { "1" }
}

/// The man pages of `cmd` and of each of its visible subcommands (`mtactl-queue-list.1`,
/// as git's), and its bash, zsh and fish completions, under `dir` (see the module doc).
/// `name` is the command's (a binary's clap name is the package's unless it says
/// otherwise). Returns the files written.
fn write_command(
    name: &str,
    cmd: clap::Command,
    dir: &Path,
) -> Result<Vec<PathBuf>, GenerateError> {
    let mut cmd = cmd
        .name(name.to_owned())
        .bin_name(name.to_owned())
        .disable_help_subcommand(true);
    cmd.build();
    let name = name.to_owned();
    let mut written = Vec::new();
    man_pages(&cmd, &name, dir, &mut written)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash-completion/completions", name.clone()),
        (Shell::Zsh, "zsh/vendor-completions", format!("_{name}")),
        (
            Shell::Fish,
            "fish/vendor_completions.d",
            format!("{name}.fish"),
        ),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut text);
        written.push(write(&dir.join(sub).join(file), &text)?);
    }
    Ok(written)
}

fn man_pages(
    cmd: &clap::Command,
    top: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), GenerateError> {
    let section = section(top);
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .source(format!("mtad {}", env!("CARGO_PKG_VERSION")))
        .manual(if section == "8" {
            "System Manager's Manual"
        } else {
            "User Commands"
        });
    let mut page = Vec::new();
    let see_also = man
        .render(&mut page)
        .and_then(|()| page.write_all(see_also(&title).as_bytes()));
    let path = dir
        .join(format!("man/man{section}"))
        .join(format!("{title}.{section}"));
    see_also.map_err(|source| GenerateError {
        path: path.clone(),
        source,
    })?;
    written.push(write(&path, &page)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, top, dir, written)?;
    }
    Ok(())
}

/// The SEE ALSO section every page ends with: the other pages and the documentation.
fn see_also(page: &str) -> String {
    let pages = [
        ("mtad", "8"),
        ("mtactl", "1"),
        ("sendmail", "1"),
        ("mtad.kdl", "5"),
    ];
    let list: Vec<String> = pages
        .iter()
        .filter(|(p, _)| *p != page)
        .map(|(p, s)| format!("\\fB{p}\\fR({s})"))
        .collect();
    format!(
        ".SH \"SEE ALSO\"\n{}\n.PP\nThe documentation in /usr/share/doc/mtad (README, operations, local submission).\n",
        list.join(",\n")
    )
}

/// mtad.kdl(5), made from `docs/configuration.md`, under `dir`.
fn write_config_page(dir: &Path) -> Result<PathBuf, GenerateError> {
    write(
        &dir.join("man/man5/mtad.kdl.5"),
        config_page(CONFIGURATION_MD).as_bytes(),
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, GenerateError> {
    let fail = |source| GenerateError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::write(path, bytes).map_err(fail)?;
    Ok(path.to_path_buf())
}

/// The mtad.kdl(5) page: `markdown` (the configuration reference) as roff for man(7),
/// with tables for tbl(1). Headings become sections (`##`) and subsections (`###` and
/// deeper), code blocks keep their lines, inline code is bold, links keep their text
/// (and their target when it is not an anchor of the page).
pub fn config_page(markdown: &str) -> String {
    let mut r = Roff::default();
    r.raw("'\\\" t\n");
    r.raw(&format!(
        ".TH MTAD.KDL 5 \"\" \"mtad {}\" \"File Formats\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    r.raw(
        ".SH NAME\nmtad.kdl \\- the configuration of mtad, the mail relay whose policy is code\n",
    );
    r.raw(".SH SYNOPSIS\n/etc/mtad/mtad.kdl\n");
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut in_h1 = false;
    let mut description = false;
    for event in pulldown_cmark::Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => match level {
                HeadingLevel::H1 => in_h1 = true,
                HeadingLevel::H2 => r.block(".SH \""),
                _ => r.block(".SS \""),
            },
            Event::End(TagEnd::Heading(level)) => {
                if level == HeadingLevel::H1 {
                    in_h1 = false;
                } else {
                    r.raw("\"\n");
                    r.heading = false;
                }
            }
            Event::Start(Tag::Paragraph) => {
                if !description {
                    description = true;
                    r.block(".SH DESCRIPTION\n");
                }
                if r.list_depth == 0 || !r.item_open {
                    r.block(".PP\n");
                }
                r.item_open = false;
            }
            Event::End(TagEnd::Paragraph) => r.newline(),
            Event::Start(Tag::CodeBlock(_)) => {
                r.block(".PP\n.RS 4\n.nf\n");
                r.code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                r.code = false;
                r.block(".fi\n.RE\n");
            }
            Event::Start(Tag::List(_)) => {
                if r.list_depth > 0 {
                    r.block(".RS 2\n");
                }
                r.list_depth += 1;
            }
            Event::End(TagEnd::List(_)) => {
                r.list_depth -= 1;
                if r.list_depth > 0 {
                    r.block(".RE\n");
                }
            }
            Event::Start(Tag::Item) => {
                r.block(".IP \\(bu 2\n");
                r.item_open = true;
            }
            Event::End(TagEnd::Item) => r.newline(),
            Event::Start(Tag::Table(align)) => r.table_start(&align),
            Event::End(TagEnd::Table) => r.block(".TE\n"),
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => r.row_open = true,
            Event::End(TagEnd::TableHead) | Event::End(TagEnd::TableRow) => {
                r.raw("\n");
                r.row_open = false;
                r.cell = 0;
            }
            Event::Start(Tag::TableCell) => {
                if r.cell > 0 {
                    r.raw("\t");
                }
                r.raw("T{\n");
                r.at_line_start = true;
            }
            Event::End(TagEnd::TableCell) => {
                r.newline();
                r.raw("T}");
                r.cell += 1;
            }
            Event::Start(Tag::Emphasis) => r.font("\\fI"),
            Event::Start(Tag::Strong) => r.font("\\fB"),
            Event::End(TagEnd::Emphasis) | Event::End(TagEnd::Strong) => r.font("\\fR"),
            Event::Start(Tag::Link { dest_url, .. }) => r.links.push(dest_url.into_string()),
            Event::End(TagEnd::Link) => {
                if let Some(url) = r.links.pop()
                    && !url.starts_with('#')
                {
                    r.text(&format!(" ({url})"));
                }
            }
            Event::Code(code) => {
                r.font("\\fB");
                r.text(&code);
                r.font("\\fR");
            }
            Event::Text(_) if in_h1 => {}
            Event::Text(text) => r.text(&text),
            Event::SoftBreak => {
                if r.row_open {
                    r.text(" ");
                } else {
                    r.raw("\n");
                    r.at_line_start = true;
                }
            }
            Event::HardBreak => r.block(".br\n"),
            Event::Rule => r.block(".PP\n"),
            _ => {}
        }
    }
    r.out.push_str(&see_also("mtad.kdl"));
    r.out
}

/// The page being written, and where in the markdown it is.
#[derive(Default)]
struct Roff {
    out: String,
    at_line_start: bool,
    heading: bool,
    code: bool,
    list_depth: usize,
    item_open: bool,
    row_open: bool,
    cell: usize,
    links: Vec<String>,
}

impl Roff {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
        self.at_line_start = s.ends_with('\n');
    }

    /// A request on a line of its own.
    fn block(&mut self, request: &str) {
        self.newline();
        self.heading = request.starts_with(".SH \"") || request.starts_with(".SS \"");
        self.raw(request);
        self.at_line_start = !self.heading;
    }

    fn newline(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.at_line_start = true;
    }

    fn font(&mut self, f: &str) {
        if !self.heading {
            self.raw(f);
        }
    }

    /// Text, escaped: a backslash is `\e`, a line may not start a request (`.`, `'`);
    /// in a code block each line is kept as it is.
    fn text(&mut self, text: &str) {
        // a heading is one quoted argument: a quote inside would end it
        let unquoted;
        let text = if self.heading {
            unquoted = text.replace('"', "'");
            &unquoted
        } else {
            text
        };
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.push('\n');
                self.at_line_start = true;
            }
            if line.is_empty() {
                continue;
            }
            if self.at_line_start && (line.starts_with('.') || line.starts_with('\'')) {
                self.out.push_str("\\&");
            }
            for c in line.chars() {
                match c {
                    '\\' => self.out.push_str("\\e"),
                    '-' if self.code => self.out.push_str("\\-"),
                    c => self.out.push(c),
                }
            }
            self.at_line_start = false;
        }
    }

    fn table_start(&mut self, align: &[Alignment]) {
        self.block(".TS\nallbox tab(\t);\n");
        let format: Vec<&str> = align
            .iter()
            .map(|a| match a {
                Alignment::Right => "r",
                Alignment::Center => "c",
                _ => "l",
            })
            .collect();
        // the first row (the head) bold, then every row as the format says; the last
        // column takes the width left (x), so that a wide table wraps its cells
        let row = |head: bool| {
            let last = format.len().saturating_sub(1);
            format
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    format!(
                        "{f}{}{}",
                        if head { "b" } else { "" },
                        if i == last { "x" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        self.raw(&format!("{}\n{}.\n", row(true), row(false)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_and_inline_code() {
        let page = config_page(
            "# Title\n\nIntro with `server { }` and *words*.\n\n## Listeners: `listen`\n\nText.\n\n### Deeper\n\nMore.\n",
        );
        assert!(page.starts_with("'\\\" t\n.TH MTAD.KDL 5"), "{page}");
        assert!(
            page.contains(
                ".SH DESCRIPTION\n.PP\nIntro with \\fBserver { }\\fR and \\fIwords\\fR.\n"
            ),
            "{page}"
        );
        assert!(
            page.contains(".SH \"Listeners: listen\"\n.PP\nText.\n"),
            "{page}"
        );
        assert!(page.contains(".SS \"Deeper\"\n"), "{page}");
        assert!(!page.contains("Title"), "the H1 is the page's NAME: {page}");
    }

    #[test]
    fn lines_never_start_a_request_and_backslashes_are_escaped() {
        let page =
            config_page("A line\n.starts with a dot\n'and a quote \\n\n\n```\n.sh -x a\\b\n```\n");
        assert!(
            page.contains("\n\\&.starts with a dot\n\\&'and a quote \\en\n"),
            "{page}"
        );
        assert!(page.contains(".nf\n\\&.sh \\-x a\\eb\n.fi\n"), "{page}");
    }

    #[test]
    fn tables_are_tbl_tables_with_one_row_per_line() {
        let page = config_page("| key | meaning |\n|---|---|\n| `a` | one\n| b | two, `x` |\n");
        assert!(
            page.contains(".TS\nallbox tab(\t);\nlb lbx\nl lx.\n"),
            "{page}"
        );
        assert!(page.contains("T{\nkey\nT}\tT{\nmeaning\nT}\n"), "{page}");
        assert!(page.contains("T{\n\\fBa\\fR\nT}\tT{\none\nT}\n"), "{page}");
        assert!(page.contains(".TE\n"), "{page}");
    }

    #[test]
    fn links_keep_their_text_and_outside_targets() {
        let page = config_page("See [hooks](hooks.md) and [below](#limits).\n");
        assert!(page.contains("See hooks (hooks.md) and below.\n"), "{page}");
    }

    #[test]
    fn lists_are_indented_paragraphs() {
        let page = config_page("- one\n- two\n  - nested\n");
        assert!(
            page.contains(".IP \\(bu 2\none\n.IP \\(bu 2\ntwo\n.RS 2\n.IP \\(bu 2\nnested\n.RE\n"),
            "{page}"
        );
    }
}
