//! Reporting: errors with the place they point at.

use kdl::KdlNode;
use miette::SourceSpan;

use super::{Parser, suggest};
use crate::config::{ConfigError, Origin};
impl Parser {
    /// Where `offset` is in the file being read.
    pub(super) fn origin(&self, offset: usize) -> Origin {
        let (line, column) = self.cur.text.line_col(offset);
        Origin {
            file: self.cur.name.clone(),
            line,
            column,
        }
    }

    pub(super) fn error(
        &mut self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut ConfigError {
        let location = self.origin(span.offset());
        self.errors.push(ConfigError {
            message: message.into(),
            source_code: Some(self.cur.source.clone()),
            span: Some(span),
            location: Some(location),
            label: Some(label.into()),
            help: None,
        });
        self.errors.last_mut().expect("just pushed")
    }

    /// An error about a node as a whole, pointing at its name.
    pub(super) fn node_error(
        &mut self,
        node: &KdlNode,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut ConfigError {
        self.error(node.name().span(), message, label)
    }

    pub(super) fn unknown_node(&mut self, node: &KdlNode, within: &str, known: &[&str]) {
        let name = node.name().value();
        let message = if within.is_empty() {
            format!("unknown node `{name}`")
        } else {
            format!("unknown node `{name}` in `{within}`")
        };
        let help = suggest(name, known.iter().copied())
            .unwrap_or_else(|| format!("expected one of: {}", known.join(", ")));
        self.node_error(node, message, "unknown node").help = Some(help);
    }

    pub(super) fn duplicate(&mut self, span: SourceSpan, what: String, first: &Origin) {
        self.error(span, format!("duplicate {what}"), "defined again here")
            .help = Some(format!("first defined at {first}"));
    }
}
