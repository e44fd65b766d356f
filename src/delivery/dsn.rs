//! Delivery status notifications (RFC 3464): bounces and delay warnings.
