//! Postfix parameters and what the importer makes of them: the one table the
//! translation reports from and `docs/migrating-from-postfix.md`'s table is generated
//! from (`mtactl import postfix --mapping`; a test keeps the page equal to it).

use super::report::Status;
use Status::*;

/// One parameter: its mtad equivalent, how close it is, and why when not exact.
pub struct Mapping {
    pub parameter: &'static str,
    pub mtad: &'static str,
    pub status: Status,
    pub why: &'static str,
}

const fn m(
    parameter: &'static str,
    mtad: &'static str,
    status: Status,
    why: &'static str,
) -> Mapping {
    Mapping {
        parameter,
        mtad,
        status,
        why,
    }
}

/// Ordered as the documentation shows them: by subject.
pub const MAPPING: &[Mapping] = &[
    // identity
    m("myhostname", "server { hostname }", Translated, ""),
    m(
        "mydomain",
        "(expanded where `$mydomain` is used)",
        Translated,
        "",
    ),
    m("myorigin", "server { origin }", Translated, ""),
    m(
        "smtpd_banner",
        "server { banner }",
        Approximated,
        "mtad's greeting is always `220 HOSTNAME TEXT`: the text after `$myhostname` is kept",
    ),
    m(
        "append_at_myorigin",
        "(always: bare names get server { origin })",
        Approximated,
        "mtad always qualifies bare addresses; `no` cannot be expressed",
    ),
    m(
        "append_dot_mydomain",
        "(nothing)",
        Approximated,
        "mtad never appends `.$mydomain` to `user@host`: the address stays as written",
    ),
    // destinations
    m(
        "mydestination",
        "domains \"local\" + route transport \"DOMAIN\" \"local\"",
        Translated,
        "",
    ),
    m(
        "relay_domains",
        "domains \"relay\" (each domain and its subdomains)",
        Translated,
        "",
    ),
    m("mynetworks", "networks \"mynetworks\"", Translated, ""),
    m(
        "mynetworks_style",
        "networks \"mynetworks\" (when mynetworks is not set)",
        Approximated,
        "the host's own interfaces are not known where the import runs: only loopback is trusted (narrower)",
    ),
    m("inet_interfaces", "listen address=", Translated, ""),
    m(
        "inet_protocols",
        "listen address=",
        Approximated,
        "with IPv6, `inet_interfaces = all` is one dual-stack listener on [::]:PORT (IPv4 clients arrive on it too, unless the host sets net.ipv6.bindv6only = 1; with `ipv6` alone it takes IPv4 clients as well), `loopback-only` 127.0.0.1 and [::1]",
    ),
    m(
        "proxy_interfaces",
        "(nothing)",
        Ignored,
        "only used by Postfix to recognise its own address behind a NAT or proxy (mail loops, `user@[address]`)",
    ),
    m(
        "parent_domain_matches_subdomains",
        "(domains entries \".domain\")",
        Translated,
        "",
    ),
    // restrictions
    m(
        "smtpd_client_restrictions",
        "stage \"rcpt\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_helo_restrictions",
        "stage \"rcpt\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_sender_restrictions",
        "stage \"rcpt\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_relay_restrictions",
        "stage \"rcpt\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_recipient_restrictions",
        "stage \"rcpt\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_data_restrictions",
        "stage \"data\" rules",
        Approximated,
        "decided at the end of the message instead of at the DATA command",
    ),
    m(
        "smtpd_end_of_data_restrictions",
        "stage \"data\" rules",
        Translated,
        "",
    ),
    m(
        "smtpd_restriction_classes",
        "(each class inlined where it is used)",
        Translated,
        "",
    ),
    m(
        "smtpd_delay_reject",
        "(rules at rcpt)",
        Approximated,
        "client, HELO and sender restrictions are always decided at RCPT, as with Postfix's default `yes`",
    ),
    m(
        "smtpd_relay_before_recipient_restrictions",
        "(the order of the rcpt rules)",
        Translated,
        "",
    ),
    m(
        "smtpd_helo_required",
        "(nothing)",
        Approximated,
        "mtad's session requires HELO/EHLO before MAIL",
    ),
    m(
        "smtpd_sender_login_maps",
        "table + sender-login=",
        Translated,
        "",
    ),
    m(
        "smtpd_reject_unlisted_recipient",
        "(built in: unknown local and virtual users are refused at RCPT)",
        Translated,
        "",
    ),
    m(
        "local_recipient_maps",
        "delivery { local-recipients }",
        Translated,
        "",
    ),
    m(
        "unknown_local_recipient_reject_code",
        "(550)",
        Approximated,
        "mtad refuses unknown local users with 550 5.1.1",
    ),
    m(
        "disable_vrfy_command",
        "(nothing)",
        Ignored,
        "mtad never tells whether an address exists: VRFY gets 252 from everyone",
    ),
    m(
        "allow_untrusted_routing",
        "(built in: rcpt-domain never matches a routed address)",
        Translated,
        "",
    ),
    m(
        "strict_rfc821_envelopes",
        "(built in)",
        Approximated,
        "mtad always refuses addresses that are not RFC 5321 syntax",
    ),
    m(
        "smtpd_policy_service_timeout",
        "policy-service timeout=",
        Translated,
        "",
    ),
    m(
        "smtpd_policy_service_default_action",
        "policy-service default-action=",
        Translated,
        "",
    ),
    // routing
    m("relayhost", "stage \"route\" { relay }", Translated, ""),
    m(
        "transport_maps",
        "table + stage \"route\" { transport-table }",
        Translated,
        "",
    ),
    m(
        "smtp_fallback_relay",
        "delivery { fallback-relay }",
        Translated,
        "",
    ),
    m(
        "fallback_relay",
        "delivery { fallback-relay }",
        Translated,
        "",
    ),
    m(
        "default_transport",
        "(the route stage's default: MX)",
        Approximated,
        "only `smtp` and `relay` are carried over",
    ),
    m(
        "relay_transport",
        "(the route stage's default: MX)",
        Approximated,
        "only `smtp` and `relay` are carried over",
    ),
    m(
        "local_transport",
        "route transport \"DOMAIN\" \"local\"",
        Approximated,
        "delivered to Maildirs under delivery { local-base }",
    ),
    m("smtp_sasl_auth_enable", "route auth=", Translated, ""),
    m(
        "smtp_sasl_password_maps",
        "credentials + route auth=",
        Translated,
        "",
    ),
    m(
        "smtp_sasl_security_options",
        "(nothing)",
        Approximated,
        "mtad sends credentials only over TLS unless delivery { auth-plaintext #true }",
    ),
    m(
        "smtp_sasl_tls_security_options",
        "(nothing)",
        Ignored,
        "mtad offers PLAIN and LOGIN",
    ),
    m(
        "smtp_tls_security_level",
        "delivery { tls }",
        Translated,
        "",
    ),
    m(
        "smtp_use_tls",
        "delivery { tls \"opportunistic\" }",
        Translated,
        "",
    ),
    m(
        "smtp_enforce_tls",
        "delivery { tls \"required\" }",
        Translated,
        "",
    ),
    m(
        "smtp_tls_CAfile",
        "delivery { tls-ca-file }",
        Translated,
        "",
    ),
    m(
        "smtp_tls_policy_maps",
        "delivery { tls-policy-map }",
        Translated,
        "",
    ),
    // content
    m(
        "content_filter",
        "content-filter + server { content-filter }",
        Translated,
        "",
    ),
    m(
        "receive_override_options",
        "(nothing)",
        Approximated,
        "mtad expands aliases when mail comes back from a filter, as `no_address_mappings` asks",
    ),
    m(
        "header_checks",
        "stage \"data\" { header-checks }",
        Translated,
        "",
    ),
    m(
        "mime_header_checks",
        "stage \"data\" { mime-header-checks }",
        Translated,
        "",
    ),
    m(
        "nested_header_checks",
        "stage \"data\" { nested-header-checks }",
        Translated,
        "",
    ),
    m(
        "body_checks",
        "stage \"data\" { body-checks }",
        Translated,
        "",
    ),
    m(
        "body_checks_size_limit",
        "body-checks size-limit=",
        Translated,
        "",
    ),
    m("smtpd_milters", "milter + listen milters=", Translated, ""),
    m(
        "non_smtpd_milters",
        "local-submission { milters } (with its maildrop under the spool)",
        Translated,
        "",
    ),
    m(
        "milter_default_action",
        "milter on-failure=",
        Translated,
        "",
    ),
    m(
        "milter_protocol",
        "(nothing)",
        Ignored,
        "mtad speaks milter protocol 6",
    ),
    // aliases
    m("alias_maps", "aliases file=", Translated, ""),
    m(
        "alias_database",
        "(nothing)",
        Ignored,
        "mtad reads the aliases file itself: no newaliases step",
    ),
    m(
        "virtual_alias_maps",
        "virtual file= / table= (several map files merged in Postfix's order)",
        Translated,
        "",
    ),
    m(
        "virtual_alias_domains",
        "domains (our destinations)",
        Approximated,
        "an address in these domains that has no virtual alias is accepted and bounced later instead of refused at RCPT",
    ),
    m(
        "virtual_mailbox_domains",
        "domains \"virtual\" + virtual-mailboxes domains=",
        Translated,
        "",
    ),
    m(
        "virtual_mailbox_maps",
        "virtual-mailboxes table=",
        Translated,
        "",
    ),
    m(
        "virtual_mailbox_base",
        "delivery { local-base }",
        Translated,
        "",
    ),
    m(
        "virtual_transport",
        "virtual-mailboxes transport=",
        Approximated,
        "LMTP and SMTP are carried over; anything else (virtual, pipe, procmail) becomes Maildir delivery",
    ),
    m(
        "virtual_uid_maps",
        "(nothing)",
        Ignored,
        "mtad writes Maildirs as its own user",
    ),
    m(
        "virtual_gid_maps",
        "(nothing)",
        Ignored,
        "mtad writes Maildirs as its own user",
    ),
    m(
        "virtual_minimum_uid",
        "(nothing)",
        Ignored,
        "mtad writes Maildirs as its own user",
    ),
    m(
        "home_mailbox",
        "(Maildir under delivery { local-base })",
        Approximated,
        "mtad delivers local mail to {local-base}/{user}/, not to home directories",
    ),
    m(
        "mailbox_command",
        "(nothing)",
        Unsupported,
        "mtad never runs a program for delivery: local mail goes to Maildirs",
    ),
    m(
        "recipient_delimiter",
        "(built in: +)",
        Approximated,
        "mtad strips a `+extension` for alias, table and mailbox lookups",
    ),
    // listeners (per listener with -o)
    m(
        "smtpd_tls_cert_file",
        "server { tls-certificate } / listen certificate=",
        Translated,
        "",
    ),
    m(
        "smtpd_tls_key_file",
        "server { tls-key } / listen key=",
        Translated,
        "",
    ),
    m(
        "smtpd_tls_chain_files",
        "server { tls-certificate tls-key }",
        Approximated,
        "the first two files are taken as certificate chain and key",
    ),
    m(
        "smtpd_tls_security_level",
        "listen starttls=",
        Translated,
        "",
    ),
    m(
        "smtpd_use_tls",
        "listen starttls=\"offered\"",
        Translated,
        "",
    ),
    m(
        "smtpd_enforce_tls",
        "listen starttls=\"required\"",
        Translated,
        "",
    ),
    m(
        "smtpd_tls_wrappermode",
        "listen implicit-tls=#true",
        Translated,
        "",
    ),
    m(
        "smtpd_tls_auth_only",
        "listen auth-plaintext=",
        Translated,
        "",
    ),
    m(
        "smtpd_sasl_auth_enable",
        "listen auth=\"offered\" users=\"sasl\" + users \"sasl\" file=\"users.passwd\"",
        Approximated,
        "mtad checks passwords itself against a users table (Dovecot passwd-file or SQL); Postfix's SASL server (Dovecot, Cyrus) keeps them, so users.passwd is written empty: every AUTH fails (535) until you fill it in",
    ),
    m(
        "smtpd_sasl_type",
        "(users)",
        Ignored,
        "see smtpd_sasl_auth_enable",
    ),
    m(
        "smtpd_sasl_path",
        "(users)",
        Ignored,
        "see smtpd_sasl_auth_enable",
    ),
    m(
        "smtpd_sasl_security_options",
        "(nothing)",
        Approximated,
        "mtad offers PLAIN and LOGIN, after TLS unless auth-plaintext",
    ),
    m(
        "smtpd_sasl_authenticated_header",
        "(always)",
        Translated,
        "",
    ),
    m(
        "smtpd_tls_protocols",
        "(nothing)",
        Approximated,
        "mtad accepts TLS 1.2 and 1.3 only",
    ),
    m(
        "smtpd_tls_mandatory_protocols",
        "(nothing)",
        Approximated,
        "mtad accepts TLS 1.2 and 1.3 only",
    ),
    m(
        "smtpd_tls_ciphers",
        "(nothing)",
        Approximated,
        "mtad uses rustls' forward-secret ciphers",
    ),
    m(
        "smtpd_tls_mandatory_ciphers",
        "(nothing)",
        Approximated,
        "mtad uses rustls' forward-secret ciphers",
    ),
    m(
        "smtpd_upstream_proxy_protocol",
        "listen proxy-protocol=#true",
        Unsupported,
        "mtad also needs the balancers' addresses (proxies=): add them by hand",
    ),
    // limits
    m(
        "message_size_limit",
        "limits { message-size }",
        Translated,
        "",
    ),
    m(
        "smtpd_recipient_limit",
        "limits { recipients }",
        Translated,
        "",
    ),
    m(
        "header_size_limit",
        "limits { header-size }",
        Translated,
        "",
    ),
    m(
        "line_length_limit",
        "(nothing)",
        Approximated,
        "mtad refuses lines over limits { text-line-length } instead of folding them",
    ),
    m("smtpd_timeout", "limits { idle-timeout }", Translated, ""),
    m(
        "smtpd_hard_error_limit",
        "limits { error-limit }",
        Translated,
        "",
    ),
    m(
        "smtpd_soft_error_limit",
        "(nothing)",
        Ignored,
        "mtad does not slow down clients that make errors",
    ),
    m(
        "smtpd_error_sleep_time",
        "(nothing)",
        Ignored,
        "mtad does not slow down clients that make errors",
    ),
    m(
        "smtpd_junk_command_limit",
        "limits { junk-commands }",
        Translated,
        "",
    ),
    m(
        "smtpd_client_connection_count_limit",
        "limits { connections-per-ip }",
        Translated,
        "",
    ),
    m("hopcount_limit", "limits { hop-count }", Translated, ""),
    m(
        "smtpd_client_connection_rate_limit",
        "rate-limits { connections }",
        Translated,
        "",
    ),
    m(
        "smtpd_client_message_rate_limit",
        "rate-limits { messages }",
        Translated,
        "",
    ),
    m(
        "smtpd_client_recipient_rate_limit",
        "rate-limits { recipients }",
        Translated,
        "",
    ),
    m(
        "smtpd_client_auth_rate_limit",
        "rate-limits { auth }",
        Translated,
        "",
    ),
    m("anvil_rate_time_unit", "rate-limits per=", Translated, ""),
    m(
        "smtpd_client_event_limit_exceptions",
        "rate-limits { exempt }",
        Translated,
        "",
    ),
    m(
        "maximal_queue_lifetime",
        "delivery { lifetime }",
        Translated,
        "",
    ),
    m(
        "bounce_queue_lifetime",
        "(delivery { lifetime })",
        Approximated,
        "bounces live as long as other mail",
    ),
    m(
        "minimal_backoff_time",
        "delivery { backoff-min }",
        Translated,
        "",
    ),
    m(
        "maximal_backoff_time",
        "delivery { backoff-max }",
        Translated,
        "",
    ),
    m(
        "delay_warning_time",
        "delivery { delay-warning }",
        Translated,
        "",
    ),
    m(
        "default_destination_concurrency_limit",
        "delivery { concurrency }",
        Translated,
        "",
    ),
    m(
        "smtp_destination_concurrency_limit",
        "delivery { concurrency }",
        Translated,
        "",
    ),
    m(
        "default_destination_recipient_limit",
        "delivery { recipients }",
        Translated,
        "",
    ),
    m(
        "smtp_connect_timeout",
        "delivery { connect-timeout }",
        Translated,
        "",
    ),
    // Postfix's own machinery
    m(
        "compatibility_level",
        "(the defaults the import takes)",
        Translated,
        "",
    ),
    m(
        "queue_directory",
        "server { spool } (--spool)",
        Ignored,
        "mtad has its own spool",
    ),
    m(
        "data_directory",
        "(nothing)",
        Ignored,
        "Postfix's own caches",
    ),
    m(
        "command_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "daemon_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "shlib_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "meta_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "config_directory",
        "(where the import looks for files)",
        Ignored,
        "table paths under it are read from the imported directory",
    ),
    m(
        "mail_owner",
        "server { user }",
        Ignored,
        "choose mtad's own account",
    ),
    m(
        "setgid_group",
        "local-submission { group }",
        Ignored,
        "mtad's maildrop has its own group",
    ),
    m(
        "sendmail_path",
        "(nothing)",
        Ignored,
        "install mtad's sendmail (docs/local-submission.md)",
    ),
    m("newaliases_path", "(nothing)", Ignored, "mtactl newaliases"),
    m(
        "mailq_path",
        "(nothing)",
        Ignored,
        "mtactl queue list --format postfix",
    ),
    m(
        "manpage_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "sample_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "readme_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m(
        "html_directory",
        "(nothing)",
        Ignored,
        "Postfix's installation",
    ),
    m("biff", "(nothing)", Ignored, "mtad does not notify comsat"),
    m(
        "mail_name",
        "(nothing)",
        Ignored,
        "only used where `$mail_name` is expanded (smtpd_banner)",
    ),
    m(
        "debug_peer_level",
        "(nothing)",
        Ignored,
        "logging detail: see MTAD_LOG in docs/operations.md",
    ),
    m(
        "debug_peer_list",
        "(nothing)",
        Ignored,
        "logging detail: see MTAD_LOG in docs/operations.md",
    ),
    m(
        "smtpd_sasl_local_domain",
        "(nothing)",
        Ignored,
        "see smtpd_sasl_auth_enable",
    ),
    m(
        "broken_sasl_auth_clients",
        "(nothing)",
        Approximated,
        "mtad announces AUTH only in the RFC 4954 form (no `AUTH=` line for Outlook Express 4)",
    ),
    m(
        "maillog_file",
        "log { output }",
        Ignored,
        "see docs/operations.md#the-log",
    ),
    m(
        "maillog_file_prefixes",
        "(nothing)",
        Ignored,
        "see docs/operations.md#the-log",
    ),
    m(
        "syslog_name",
        "log { syslog-name }",
        Ignored,
        "mtad logs as `mtad/...` unless log { syslog-name } says otherwise",
    ),
    m(
        "syslog_facility",
        "log { syslog-facility }",
        Ignored,
        "set log { syslog-facility } if it matters",
    ),
    m(
        "smtpd_tls_session_cache_database",
        "(nothing)",
        Ignored,
        "rustls keeps its own session cache",
    ),
    m(
        "smtp_tls_session_cache_database",
        "(nothing)",
        Ignored,
        "rustls keeps its own session cache",
    ),
    m(
        "smtpd_tls_loglevel",
        "(nothing)",
        Ignored,
        "mtad logs every handshake's protocol and cipher",
    ),
    m(
        "smtp_tls_loglevel",
        "(nothing)",
        Ignored,
        "mtad logs the TLS of every delivery",
    ),
    m(
        "smtp_tls_CApath",
        "(the system's CAs)",
        Approximated,
        "mtad trusts the system's CAs and delivery { tls-ca-file }",
    ),
    m(
        "smtpd_tls_CApath",
        "(nothing)",
        Ignored,
        "no client certificates",
    ),
    m(
        "smtpd_tls_CAfile",
        "(nothing)",
        Ignored,
        "no client certificates",
    ),
    m(
        "tls_random_source",
        "(nothing)",
        Ignored,
        "rustls uses the OS's random source",
    ),
    m(
        "smtputf8_enable",
        "(built in)",
        Translated,
        "mtad offers SMTPUTF8",
    ),
    m(
        "mailbox_size_limit",
        "(nothing)",
        Ignored,
        "mtad's Maildirs have no size limit",
    ),
    m(
        "smtpd_peername_lookup",
        "(nothing)",
        Ignored,
        "mtad looks up no client names",
    ),
    m(
        "smtp_send_xforward_command",
        "(built in for content filters)",
        Translated,
        "",
    ),
    m(
        "smtpd_authorized_xforward_hosts",
        "(nothing)",
        Ignored,
        "mtad recognises mail back from its filter without XFORWARD",
    ),
    m(
        "smtpd_authorized_xclient_hosts",
        "(nothing)",
        Ignored,
        "mtad does not take XCLIENT: use the PROXY protocol",
    ),
    m(
        "postscreen_dnsbl_sites",
        "dnsbl \"postscreen\" (the same sites and weights)",
        Translated,
        "",
    ),
    m(
        "postscreen_dnsbl_threshold",
        "dnsbl \"postscreen\" threshold=",
        Translated,
        "",
    ),
    m(
        "postscreen_dnsbl_action",
        "stage \"rcpt\" { reject dnsbl=\"postscreen\" listener= }",
        Approximated,
        "`enforce` refuses every RCPT with 550, as postscreen does; `drop` (a 521 and hang-up after the greeting) is a 521 at RCPT; `ignore` writes nothing",
    ),
    m(
        "postscreen_access_list",
        "(not-client=\"mynetworks\" on the postscreen rule)",
        Approximated,
        "only `permit_mynetworks` is carried over; other entries are not (narrower)",
    ),
    m(
        "postscreen_greet_action",
        "(nothing)",
        Unsupported,
        "mtad has no pregreet test: clients that talk before the greeting are answered in order",
    ),
    m(
        "postscreen_pipelining_enable",
        "(nothing)",
        Unsupported,
        "mtad has none of postscreen's after-greeting protocol tests",
    ),
    m(
        "postscreen_non_smtp_command_enable",
        "(nothing)",
        Unsupported,
        "mtad has none of postscreen's after-greeting protocol tests",
    ),
    m(
        "postscreen_bare_newline_enable",
        "(nothing)",
        Unsupported,
        "mtad has none of postscreen's after-greeting protocol tests",
    ),
];

/// The entry for `parameter`, if the importer knows it.
pub fn find(parameter: &str) -> Option<&'static Mapping> {
    MAPPING.iter().find(|m| m.parameter == parameter)
}

/// The table of docs/migrating-from-postfix.md (Markdown), one row per parameter.
pub fn markdown() -> String {
    let mut out = String::from("| Postfix | mtad | how |\n|---|---|---|\n");
    let mut seen = std::collections::BTreeSet::new();
    for m in MAPPING {
        if !seen.insert(m.parameter) {
            continue;
        }
        let how = if m.why.is_empty() {
            m.status.as_str().to_owned()
        } else {
            format!("{}: {}", m.status.as_str(), m.why)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            m.parameter,
            m.mtad.replace('|', "\\|"),
            how.replace('|', "\\|")
        ));
    }
    out
}
