//! The answer of `GET /<collection>[?name=NAME]`: the whole collection as an
//! array, or with `name`, the one matching record as an object.
//!
//! poem-openapi's `Union` derive would describe this as `type: object` with
//! a `oneOf` that includes an array, which no validator accepts; this type
//! describes it as a plain `oneOf`.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use serde_json::Value;

/// Every record, or the one a name lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing<T> {
    /// All records, oldest first.
    All(Vec<T>),
    /// The record with the requested name.
    One(T),
}

impl<T: Type> Type for Listing<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("{}Listing", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |registry| {
            T::register(registry);
            Vec::<T>::register(registry);
            MetaSchema {
                description: Some("All records (no `name` given), or the one with the given `name`."),
                one_of: vec![Vec::<T>::schema_ref(), T::schema_ref()],
                ..MetaSchema::ANY
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<T: ToJSON> ToJSON for Listing<T> {
    fn to_json(&self) -> Option<Value> {
        match self {
            Listing::All(all) => all.to_json(),
            Listing::One(one) => one.to_json(),
        }
    }
}
