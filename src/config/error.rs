//! Configuration errors: every problem found in one pass, each with its place in the
//! file, rendered by miette as `[file:line:col]` with the offending text underlined.

use std::fmt;
use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

use super::Origin;

/// One problem in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// What is wrong, as one sentence.
    pub message: String,
    /// The file the error is in, named for display; `None` when the file could not
    /// be read at all.
    pub source_code: Option<NamedSource<Arc<String>>>,
    /// The byte span of the offending text.
    pub span: Option<SourceSpan>,
    /// The same place as file:line:col, for plain-text and JSON output.
    pub location: Option<Origin>,
    /// Short text under the caret (`unknown node`, `expected a string`).
    pub label: Option<String>,
    /// A suggestion: "did you mean `listen`?", the expected syntax, ...
    pub help: Option<String>,
}

impl ConfigError {
    /// An error that has no place in a file, such as a failure to read it.
    pub fn without_source(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source_code: None,
            span: None,
            location: None,
            label: None,
            help: None,
        }
    }
}

impl Diagnostic for ConfigError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        None
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source_code
            .as_ref()
            .map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            self.label.clone(),
            span,
        ))))
    }
}

/// Every error found in one configuration file.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}", summary(.errors.len(), .file))]
pub struct ConfigErrors {
    /// The file, as named for display.
    pub file: String,
    /// The errors, in file order.
    #[related]
    pub errors: Vec<ConfigError>,
}

fn summary(count: usize, file: &str) -> String {
    let noun = if count == 1 { "error" } else { "errors" };
    format!("{count} {noun} in {file}")
}

/// Renders every error with miette's graphical handler, without colours: a summary
/// line, then each error with its `[file:line:col]`, the source line and a caret.
/// This is what `mtactl check` prints.
pub fn render(errors: &ConfigErrors) -> String {
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = format!("{errors}\n");
    for error in &errors.errors {
        out.push('\n');
        if handler.render_report(&mut out, error).is_err() {
            // Rendering into a String cannot fail; keep the message regardless.
            out.push_str(&format!("{error}\n"));
        }
    }
    out
}
