from rest_framework.permissions import BasePermission


class IsStaff(BasePermission):
    """Staff only (order transitions, delivery rates)."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff)
