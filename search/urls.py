from django.urls import path

from search import apis

app_name = "search"
urlpatterns = [
    path("search/", apis.SearchApi.as_view(), name="search"),
    path("search/batch/", apis.SearchBatchApi.as_view(), name="search-batch"),
    path("duplicates/", apis.DuplicateListApi.as_view(), name="duplicates"),
    path("duplicates/keep/", apis.DuplicatesKeepApi.as_view(), name="duplicates-keep"),
    path("duplicates/dismiss/", apis.DuplicatesDismissApi.as_view(), name="duplicates-dismiss"),
    path("index/jobs/", apis.IndexJobCreateApi.as_view(), name="job-list"),
    path("index/jobs/<int:pk>/", apis.IndexJobDetailApi.as_view(), name="job-detail"),
    path("index/jobs/<int:pk>/events/", apis.IndexJobEventsApi.as_view(), name="job-events"),
    path("index/jobs/<int:pk>/cancel/", apis.IndexJobCancelApi.as_view(), name="job-cancel"),
    path("index/status/", apis.IndexStatusApi.as_view(), name="index-status"),
    path("models/", apis.ModelListApi.as_view(), name="model-list"),
    path("models/trained/", apis.TrainedModelListApi.as_view(), name="trained-model-list"),
    path("models/trained/<str:key>/", apis.TrainedModelDetailApi.as_view(), name="trained-model-detail"),
    path("models/<str:key>/activate/", apis.ModelActivateApi.as_view(), name="model-activate"),
]
