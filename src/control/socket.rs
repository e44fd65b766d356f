//! The control socket: `mtactl queue flush|delete|hold|release` talk to the running daemon.
