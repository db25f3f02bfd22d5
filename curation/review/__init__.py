"""Expert review: web app, assignment, consensus, agreement."""
