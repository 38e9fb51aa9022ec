// Pages that list similar products (the home page's results, a product's page): fill their bars.
import {fillBars} from "./api.js";

fillBars();
