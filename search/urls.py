from django.urls import path

from search.apis import duplicates, jobs, models, queries

app_name = "search"
urlpatterns = [
    path("search/", queries.SearchApi.as_view(), name="search"),
    path("search/batch/", queries.SearchBatchApi.as_view(), name="search-batch"),
    path("duplicates/", duplicates.DuplicateListApi.as_view(), name="duplicates"),
    path("duplicates/keep/", duplicates.DuplicatesKeepApi.as_view(), name="duplicates-keep"),
    path("duplicates/dismiss/", duplicates.DuplicatesDismissApi.as_view(), name="duplicates-dismiss"),
    path("index/jobs/", jobs.IndexJobCreateApi.as_view(), name="job-list"),
    path("index/jobs/<int:pk>/", jobs.IndexJobDetailApi.as_view(), name="job-detail"),
    path("index/jobs/<int:pk>/events/", jobs.IndexJobEventsApi.as_view(), name="job-events"),
    path("index/jobs/<int:pk>/cancel/", jobs.IndexJobCancelApi.as_view(), name="job-cancel"),
    path("index/status/", jobs.IndexStatusApi.as_view(), name="index-status"),
    path("models/", models.ModelListApi.as_view(), name="model-list"),
    path("models/trained/", models.TrainedModelListApi.as_view(), name="trained-model-list"),
    path("models/trained/<str:key>/", models.TrainedModelDetailApi.as_view(), name="trained-model-detail"),
    path("models/<str:key>/activate/", models.ModelActivateApi.as_view(), name="model-activate"),
]
