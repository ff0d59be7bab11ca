"""Settings per environment: ``local`` (the default of manage.py, celery and
wsgi), ``test`` (pytest.ini), ``production`` (the Docker image); ``base`` holds
what they share."""
