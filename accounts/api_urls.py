from django.urls import path

from accounts import apis

app_name = "accounts-api"
urlpatterns = [
    path("audit/", apis.AuditListApi.as_view(), name="audit-list"),
]
