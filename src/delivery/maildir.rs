//! Maildir delivery for the `local` transport.
