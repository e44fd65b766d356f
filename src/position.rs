//! Byte offsets → line:column, for every message that points into a file we read:
//! the configuration ([`crate::config`]), table files ([`crate::lookup`]) and test
//! suites ([`crate::control`]).
//!
//! Lines and columns are 1-based; a column counts characters, not bytes, so a
//! message points where an editor's cursor would be. A leaf: it imports nothing
//! from the crate.

/// A text and where its lines start. `T` is anything that derefs to text: `String`,
/// `&str`, `Arc<String>`...
#[derive(Clone, Debug)]
pub struct Positions<T = String> {
    text: T,
    /// Byte offset of the start of each line (the first is 0).
    line_starts: Vec<usize>,
}

impl<T> Positions<T>
where
    T: std::ops::Deref,
    T::Target: AsRef<str>,
{
    pub fn new(text: T) -> Self {
        let line_starts = std::iter::once(0)
            .chain((*text).as_ref().match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, line_starts }
    }

    /// The text itself.
    pub fn text(&self) -> &str {
        (*self.text).as_ref()
    }

    /// The 1-based line and column (in characters) of a byte offset. An offset past
    /// the end is the end; one inside a character counts the bytes of its line before
    /// it instead of characters.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let text = self.text();
        let offset = offset.min(text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(column + 1))
    }

    /// `name:line:col` of a byte offset.
    pub fn at(&self, name: &str, offset: usize) -> String {
        let (line, column) = self.line_col(offset);
        format!("{name}:{line}:{column}")
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::Positions;

    #[test]
    fn lines_and_character_columns() {
        let p = Positions::new("ab\nçé x\n\nlast");
        assert_eq!(p.line_col(0), (1, 1));
        assert_eq!(p.line_col(2), (1, 3)); // the newline ends line 1
        assert_eq!(p.line_col(3), (2, 1));
        // `x` is after two 2-byte characters and a space: byte 8, character 4
        assert_eq!(p.line_col(8), (2, 4));
        assert_eq!(p.line_col(10), (3, 1));
        assert_eq!(p.line_col(11), (4, 1));
        assert_eq!(p.at("f.kdl", 14), "f.kdl:4:4");
    }

    #[test]
    fn past_the_end_and_inside_a_character() {
        let p = Positions::new("é");
        assert_eq!(p.line_col(99), (1, 2));
        assert_eq!(p.line_col(1), (1, 2)); // inside `é`: one byte before it
        assert_eq!(Positions::new("").line_col(0), (1, 1));
    }
}
