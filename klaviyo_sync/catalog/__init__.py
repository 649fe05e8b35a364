"""The catalog pass: Klaviyo's catalog kept equal to the business database's products."""
