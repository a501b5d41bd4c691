"""One account per username and per e-mail, case-insensitively, enforced by the database (concurrent sign-ups)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("shop", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            sql=[
                "CREATE UNIQUE INDEX auth_user_username_ci_uniq ON auth_user (lower(username))",
                "CREATE UNIQUE INDEX auth_user_email_ci_uniq ON auth_user (lower(email)) WHERE email <> ''",
            ],
            reverse_sql=[
                "DROP INDEX IF EXISTS auth_user_username_ci_uniq",
                "DROP INDEX IF EXISTS auth_user_email_ci_uniq",
            ],
        ),
    ]
