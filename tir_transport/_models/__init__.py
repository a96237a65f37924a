"""The models: what is known of each by API name (`known`), and `GET /models` (`wire`, `client`)."""
