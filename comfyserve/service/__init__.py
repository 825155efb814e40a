"""The job service, written against the ports: ``JobService`` (``job_service``) is the facade the HTTP routes
call; one module per use case (``submit``, ``jobs``, ``validate``, ``uploads``, ``inputs``, ``comfyui``,
``history``) holds the rules, ``errors`` the domain errors and ``settings`` the typed configuration."""
