//! Types and schema rules shared by several kinds: secret references, money, and the CEL rules
//! that recur (currency codes, decimals, https URLs, jurisdiction codes, immutability).

use kube::KubeSchema;
use kube::core::{Message, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret that lives in the same namespace as the object referring to it (for
/// cluster-scoped regions: the region's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// A key in a ConfigMap in the region's namespace (for data that is not secret, such as CA
/// certificates).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$')").message("name must be a ConfigMap name (a DNS subdomain)"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key inside the ConfigMap's data.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("key must be a ConfigMap key (letters, digits, '-', '_' and '.')"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// An amount of money in one currency. Amounts are decimal strings (like Kubernetes quantities)
/// so that no spend is ever rounded through a binary float: write `amount: "1500"` or `"0.25"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// Non-negative decimal amount, at most 6 decimal places, e.g. "2500" or "3.75".
    #[x_kube(validation = decimal_rule("amount"))]
    #[schemars(length(max = 32))]
    pub amount: String,
    /// ISO 4217 currency code: three capital letters, e.g. EUR, INR, USD.
    #[x_kube(validation = currency_rule("currency"))]
    #[schemars(length(max = 16))]
    pub currency: String,
}

/// CEL: the value is a non-negative decimal with at most six decimal places.
pub fn decimal_rule(field: &str) -> Rule {
    Rule::new("self.matches('^[0-9]{1,18}([.][0-9]{1,6})?$')").message(Message::Message(format!(
        "{field} must be a non-negative decimal number such as \"12.50\" (at most 6 decimal places)"
    )))
}

/// CEL: the value is an ISO 4217 currency code.
pub fn currency_rule(field: &str) -> Rule {
    Rule::new("self.matches('^[A-Z]{3}$')").message(Message::Message(format!(
        "{field} must be an ISO 4217 currency code of three capital letters, e.g. EUR"
    )))
}

/// CEL: the value is an absolute https URL.
pub fn https_rule(field: &str) -> Rule {
    Rule::new("isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''")
        .message(Message::Message(format!(
            "{field} must be an absolute https:// URL"
        )))
}

/// CEL: the value is an absolute http or https URL (for in-cluster or private in-region
/// services that may not terminate TLS themselves).
pub fn http_url_rule(field: &str) -> Rule {
    Rule::new(
        "isURL(self) && (url(self).getScheme() == 'https' || url(self).getScheme() == 'http') && url(self).getHostname() != ''",
    )
    .message(Message::Message(format!(
        "{field} must be an absolute http:// or https:// URL"
    )))
}

/// CEL: the value is `EU` or an ISO 3166-1 alpha-2 country code.
pub fn jurisdiction_rule(field: &str) -> Rule {
    Rule::new("self.matches('^(EU|[A-Z]{2})$')").message(Message::Message(format!(
        "{field} must be EU or an ISO 3166-1 alpha-2 country code such as IN or FR"
    )))
}

/// CEL transition rule: the value may not change once set.
pub fn immutable_rule(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!(
        "{field} is immutable; delete and re-create the object to change it"
    )))
}

/// CEL: the value is a DNS-1123 label (a Kubernetes object or namespace name).
pub fn dns_label_rule(field: &str) -> Rule {
    Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message(Message::Message(
        format!(
            "{field} must be a DNS label: lower-case letters, digits and '-', at most 63 characters"
        ),
    ))
}

/// Schema of a free-form object whose content the API server keeps as given.
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Serde default helper: `true`.
pub(crate) fn yes() -> bool {
    true
}
