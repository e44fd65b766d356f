-- Seed 002's virtual domains, aliases and mailboxes, in PostfixAdmin's tables (the
-- columns mtad and Postfix read; PostfixAdmin has a few more). The same statements load
-- SQLite, MySQL/MariaDB and PostgreSQL; postfixadmin.db is this file in SQLite:
--   sqlite3 postfixadmin.db < postfixadmin.sql
-- The password is "change this password" (doveadm pw -s ARGON2ID): replace it.
CREATE TABLE domain (
    domain varchar(255) NOT NULL PRIMARY KEY,
    description varchar(255) NOT NULL DEFAULT '',
    aliases int NOT NULL DEFAULT 0,
    mailboxes int NOT NULL DEFAULT 0,
    maxquota bigint NOT NULL DEFAULT 0,
    quota bigint NOT NULL DEFAULT 0,
    transport varchar(255) DEFAULT NULL,
    backupmx smallint NOT NULL DEFAULT 0,
    active smallint NOT NULL DEFAULT 1
);
CREATE TABLE alias (
    address varchar(255) NOT NULL PRIMARY KEY,
    goto text NOT NULL,
    domain varchar(255) NOT NULL,
    active smallint NOT NULL DEFAULT 1
);
CREATE TABLE mailbox (
    username varchar(255) NOT NULL PRIMARY KEY,
    password varchar(255) NOT NULL,
    name varchar(255) NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL,
    quota bigint NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL,
    domain varchar(255) NOT NULL,
    active smallint NOT NULL DEFAULT 1
);
INSERT INTO domain (domain, description, backupmx, active) VALUES
    ('hoge.org', 'the virtual domain', 0, 1),
    ('backup.hoge.org', 'we are only its backup MX', 1, 1),
    ('closed.hoge.org', 'no longer served', 0, 0);
INSERT INTO mailbox (username, password, name, maildir, local_part, domain, active) VALUES
    ('user@hoge.org', '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$DjpPtbCG9lWxQ5V22ipvBw$hwimitmwVhf11MiynKEHc6h2TsikGPsAVycWCTTLM4I', 'User', 'hoge.org/user/', 'user', 'hoge.org', 1),
    ('hoge-owner@hoge.org', '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$DjpPtbCG9lWxQ5V22ipvBw$hwimitmwVhf11MiynKEHc6h2TsikGPsAVycWCTTLM4I', 'Owner', 'hoge.org/hoge-owner/', 'hoge-owner', 'hoge.org', 1),
    ('gone@hoge.org', '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$DjpPtbCG9lWxQ5V22ipvBw$hwimitmwVhf11MiynKEHc6h2TsikGPsAVycWCTTLM4I', 'Gone', 'hoge.org/gone/', 'gone', 'hoge.org', 0);
INSERT INTO alias (address, goto, domain, active) VALUES
    ('user@hoge.org', 'user@hoge.org', 'hoge.org', 1),
    ('hoge-owner@hoge.org', 'hoge-owner@hoge.org', 'hoge.org', 1),
    ('postmaster@hoge.org', 'hoge-owner@hoge.org', 'hoge.org', 1),
    ('sales@hoge.org', 'user@hoge.org,partner@example.com', 'hoge.org', 1),
    ('old-list@hoge.org', 'user@hoge.org', 'hoge.org', 0);
