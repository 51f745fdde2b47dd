"""HTTP: authentication, problem details, and the handlers of each resource."""
