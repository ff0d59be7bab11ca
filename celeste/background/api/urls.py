from django.urls import re_path

from .views import TaskConsoleView

urlpatterns = [
    re_path(r"^background/tasks/?$", TaskConsoleView.as_view(), name="background-tasks"),
]
