//! The `delivery` block: local recipients.

use super::*;

#[test]
fn local_recipients() {
    // the default: the system's users and the aliases (Postfix's local_recipient_maps)
    let c = parse(PRELUDE);
    assert_eq!(
        c.delivery.local_recipients,
        Some(vec![LocalRecipients::Passwd, LocalRecipients::Aliases])
    );
    let c = parse(&format!(
        "{PRELUDE}table \"users\" {{\n    \"alice\" \"yes\"\n}}\ndelivery {{\n    local-recipients \"users\" \"passwd\"\n}}\n"
    ));
    assert_eq!(
        c.delivery.local_recipients,
        Some(vec![
            LocalRecipients::Table("users".into()),
            LocalRecipients::Passwd
        ])
    );
    let c = parse(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"any\"\n}}\n"
    ));
    assert_eq!(c.delivery.local_recipients, None);
    let (errors, rendered) = check(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"passwd\" \"nosuch\"\n}}\n"
    ));
    assert_eq!(errors.errors.len(), 1, "{rendered}");
    assert_eq!(errors.errors[0].location, Some(origin(7, 31)), "{rendered}");
    assert!(rendered.contains("`nosuch` is not"), "{rendered}");
    let (_, rendered) = check(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"any\" \"passwd\"\n}}\n"
    ));
    assert!(rendered.contains("cannot be combined"), "{rendered}");
}
