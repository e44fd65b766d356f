//! `include` nodes: reading every file of a configuration, in the order its nodes apply.

use std::path::PathBuf;
use std::sync::Arc;

use kdl::{KdlDocument, KdlNode};

use super::{Parser, SourceFile, resolve};
/// A parsed file and where its `include` nodes point (node index → document index).
pub(super) struct Loaded {
    pub(super) file: Arc<SourceFile>,
    pub(super) doc: KdlDocument,
    pub(super) includes: Vec<(usize, usize)>,
}

/// Every top-level node in the order it applies: an included file's nodes stand
/// where its `include` does.
pub(super) fn ordered(docs: &[Loaded]) -> Vec<(Arc<SourceFile>, &KdlNode)> {
    fn walk<'d>(docs: &'d [Loaded], at: usize, out: &mut Vec<(Arc<SourceFile>, &'d KdlNode)>) {
        let loaded = &docs[at];
        for (index, node) in loaded.doc.nodes().iter().enumerate() {
            match loaded.includes.iter().find(|(i, _)| *i == index) {
                Some((_, child)) => walk(docs, *child, out),
                None => out.push((loaded.file.clone(), node)),
            }
        }
    }
    let mut out = Vec::new();
    if !docs.is_empty() {
        walk(docs, 0, &mut out);
    }
    out
}

/// How deep includes may nest (a guard against runaway include chains).
const MAX_INCLUDE_DEPTH: usize = 16;

impl Parser {
    /// Parses `file` and, depth first, every file it includes: the documents come out
    /// in the order their nodes apply. `stack` holds the include chain, for cycles.
    pub(super) fn load(
        &mut self,
        file: Arc<SourceFile>,
        docs: &mut Vec<Loaded>,
        stack: &mut Vec<PathBuf>,
    ) {
        self.cur = file.clone();
        let doc = match KdlDocument::parse_v2(file.text.text()) {
            Ok(doc) => doc,
            Err(e) => {
                for d in e.diagnostics {
                    let message = d.message.unwrap_or_else(|| "invalid KDL".to_owned());
                    let label = d.label.unwrap_or_else(|| "here".to_owned());
                    self.error(d.span, format!("syntax error: {message}"), label)
                        .help = d.help;
                }
                return;
            }
        };
        stack.push(file.path.clone());
        let mut children = Vec::new();
        for (index, node) in doc.nodes().iter().enumerate() {
            if node.name().value() != "include" {
                continue;
            }
            self.check_annotations(node);
            self.props(node, &[]);
            self.no_children(node);
            let Some(args) = self.args(node, 1, Some(1), "include \"file.kdl\"") else {
                continue;
            };
            let Some(name) = self.string(args[0], "include path") else {
                continue;
            };
            let path = resolve(&file.path, name);
            if stack.contains(&path) {
                self.error(
                    args[0].span(),
                    format!("`{name}` includes itself (an include cycle)"),
                    "include cycle",
                );
                continue;
            }
            if stack.len() >= MAX_INCLUDE_DEPTH {
                self.error(
                    args[0].span(),
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
                    "too deep",
                );
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    self.sources.add(&path, text.as_bytes());
                    children.push((index, SourceFile::new(name, &path, &text)));
                }
                Err(e) => {
                    self.error(
                        args[0].span(),
                        format!("cannot read `{name}`: {e}"),
                        "cannot read",
                    );
                }
            }
        }
        let me = docs.len();
        docs.push(Loaded {
            file,
            doc,
            includes: Vec::new(),
        });
        for (index, child) in children {
            let child_index = docs.len();
            let before = docs.len();
            self.load(child, docs, stack);
            if docs.len() > before {
                docs[me].includes.push((index, child_index));
            }
        }
        stack.pop();
    }
}
