//! Client TLS (STARTTLS with rustls) and the TLS policy of a route.
