"""The job API: one Powertools Router (routes.py) served by API Gateway + Lambda and by the local ASGI server
(app.py), with API-key authentication (auth.py) shared with the Lambda TOKEN authorizer (authorizer.py)."""
