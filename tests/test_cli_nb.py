"""`dfflow nb` lists and shows what a real NB db holds."""
import asyncio
import json

from click.testing import CliRunner

from dfflow.cli import main
from dfflow.nb.store import NbApi
from tests.nbtopo import network, port


async def _seed(url):
    nb = NbApi(url)
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"], chassis="chassis-1")
    await nb.close()


def test_nb_list_and_show_print_table_and_json(nb_url):
    asyncio.run(_seed(nb_url))
    runner = CliRunner()
    table = runner.invoke(main, ["nb", "list", "--nb", nb_url])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["TABLE", "ID", "TOPIC", "VERSION"]
    assert any(line.startswith("lport") and "p1" in line and "binding_chassis=chassis-1" in line
               for line in lines)
    listed = json.loads(runner.invoke(main, ["nb", "list", "lport", "--json", "--nb", nb_url]).output)
    assert [(o["table"], o["id"], o["ips"]) for o in listed] == [("lport", "p1", ["10.1.0.5"])]
    shown = json.loads(runner.invoke(main, ["nb", "show", "subnet", "net1-subnet", "--json",
                                            "--nb", nb_url]).output)
    assert shown["cidr"] == "10.1.0.0/24" and shown["lswitch"] == "net1"


def test_nb_show_of_a_missing_object_is_a_clear_error(nb_url):
    result = CliRunner().invoke(main, ["nb", "show", "lport", "ghost", "--nb", nb_url])
    assert result.exit_code == 1
    assert "lport 'ghost' does not exist" in result.output


def test_nb_unreachable_db_is_a_clear_error():
    result = CliRunner().invoke(main, ["nb", "list", "--nb", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1 and "NB db at redis://127.0.0.1:1/0" in result.output
