//! Importing other mail servers' configurations as mtad configurations.
//!
//! [`postfix`]: `mtactl import postfix DIR --out OUT` reads a Postfix configuration
//! directory (main.cf, master.cf and the tables they name) and writes an mtad
//! configuration, a test suite that pins what Postfix did, and a report of what did
//! not translate. A translator from text to text: it reads files, never runs or
//! changes anything of Postfix's, and writes only into its output directory.

pub mod postfix;
