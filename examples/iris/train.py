"""Train a classifier on iris.csv, log it to MLflow, save the model into ./outputs/model.

Run by examples/iris/job.yml.  hpcjobs sets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and
MLFLOW_EXPERIMENT_ID, so autologging lands in the job's run without any setup here;
the same script runs unchanged on Azure ML.  Register the model afterwards with

    hpcjobs model create --name iris-classifier --job <job name> --path outputs/model

and load it with ``mlflow.sklearn.load_model("models:/iris-classifier/1")``.
"""

from __future__ import annotations

import argparse

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="iris.csv (features and a 'species' column)")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--test-size", type=float, default=0.3)
    args = parser.parse_args()

    # Parameters, training metrics and the estimator's description are logged
    # automatically; the model itself goes to ./outputs/model (below), which hpcjobs
    # uploads as the run's artifacts in every tracking mode.
    mlflow.autolog(log_models=False)

    # start_run() attaches to the job's run (MLFLOW_RUN_ID); keeping it open across fit()
    # stops autologging from ending the run before the test metrics below are logged.
    with mlflow.start_run():
        df = pd.read_csv(args.data)
        x_train, x_test, y_train, y_test = train_test_split(
            df[FEATURES], df["species"], test_size=args.test_size, random_state=42, stratify=df["species"]
        )
        model = LogisticRegression(C=args.C, max_iter=args.max_iter)
        model.fit(x_train, y_train)

        predicted = model.predict(x_test)
        mlflow.log_metric("test_accuracy", accuracy_score(y_test, predicted))
        mlflow.log_metric("test_f1_macro", f1_score(y_test, predicted, average="macro"))
        mlflow.log_param("rows", len(df))

        mlflow.sklearn.save_model(model, "outputs/model", input_example=x_test.head(3))
        print(f"test accuracy {accuracy_score(y_test, predicted):.3f}; model saved to ./outputs/model")


if __name__ == "__main__":
    main()
