//! Conversions to and from the `cloudevents-sdk` crate's `Event`, through the JSON event
//! format both sides implement, so every attribute and the data arrive as the other side
//! understands them.

use super::CloudEvent;
use crate::{Error, Result};

impl TryFrom<&CloudEvent> for cloudevents::Event {
    type Error = Error;
    fn try_from(ce: &CloudEvent) -> Result<cloudevents::Event> {
        serde_json::from_slice(&ce.to_json()?).map_err(|e| {
            Error::config(format!("the CloudEvents SDK does not take this event: {e}"))
        })
    }
}

impl TryFrom<CloudEvent> for cloudevents::Event {
    type Error = Error;
    fn try_from(ce: CloudEvent) -> Result<cloudevents::Event> {
        cloudevents::Event::try_from(&ce)
    }
}

impl TryFrom<&cloudevents::Event> for CloudEvent {
    type Error = Error;
    fn try_from(event: &cloudevents::Event) -> Result<CloudEvent> {
        let json = serde_json::to_vec(event)
            .map_err(|e| Error::config(format!("cannot write the SDK's event as JSON: {e}")))?;
        CloudEvent::from_json(&json)
    }
}

impl TryFrom<cloudevents::Event> for CloudEvent {
    type Error = Error;
    fn try_from(event: cloudevents::Event) -> Result<CloudEvent> {
        CloudEvent::try_from(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};

    #[test]
    fn sdk_events_convert_both_ways() {
        let sdk = EventBuilderV10::new()
            .id("0001")
            .source("http://localhost/")
            .ty("example.demo")
            .subject("orders")
            .extension("tenant", "acme")
            .extension("priority", 3)
            .data("application/json", serde_json::json!({"total": 42}))
            .build()
            .unwrap();
        let ce = CloudEvent::try_from(&sdk).unwrap();
        assert_eq!(ce.id(), Some("0001"));
        assert_eq!(ce.subject(), Some("orders"));
        assert_eq!(
            ce.attribute("priority"),
            Some(&super::super::AttributeValue::Integer(3))
        );
        assert_eq!(ce.data().unwrap().as_ref(), br#"{"total":42}"#);
        let back = cloudevents::Event::try_from(&ce).unwrap();
        assert_eq!(back, sdk);
        assert_eq!(back.ty(), "example.demo");

        let binary = CloudEvent::new("2", "/s", "t").with_data("application/avro", vec![0u8, 1]);
        let sdk = cloudevents::Event::try_from(&binary).unwrap();
        assert_eq!(CloudEvent::try_from(sdk).unwrap(), binary);
    }
}
